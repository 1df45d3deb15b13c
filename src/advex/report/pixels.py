"""The one-pixel figure: each image beside its adversarial twin, the changed pixels circled."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from advex.data import atomic_write_bytes


@dataclass
class PixelItem:
    name: str
    x: torch.Tensor  # (C, H, W) in [0, 1]
    x_adv: torch.Tensor
    label: str
    confidence: float
    label_adv: str
    confidence_adv: float
    success: bool
    pixels: list[tuple[int, int]] = field(default_factory=list)  # (row, col) of each changed pixel


def _show(ax, img: torch.Tensor) -> None:
    a = img.detach().clamp(0, 1).cpu()
    if a.shape[0] == 1:
        ax.imshow(a[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(a.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def pixel_figure(
    items: Sequence[PixelItem], path: str | os.PathLike, title: str | None = None, per_row: int | None = None
) -> None:
    """Write original | adversarial pairs, changed pixels circled, labels and confidences (atomically)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    n = len(items)
    if n == 0:
        raise ValueError("pixel_figure needs at least one image")
    h, w = items[0].x.shape[-2:]
    per_row = per_row or (4 if max(h, w) <= 64 else 2)
    per_row = min(per_row, n)
    rows = (n + per_row - 1) // per_row
    panel = 1.9 if max(h, w) <= 64 else 3.0
    fig, axes = plt.subplots(
        rows, 2 * per_row, figsize=(2 * per_row * panel, rows * (panel + 0.7) + (0.5 if title else 0)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for k, it in enumerate(items):
        a0, a1 = axes[k // per_row, 2 * (k % per_row)], axes[k // per_row, 2 * (k % per_row) + 1]
        for ax in (a0, a1):
            ax.axis("on")
            for s in ax.spines.values():
                s.set_visible(False)
        _show(a0, it.x)
        a0.set_title(f"{it.name}: {it.label}\n{100 * it.confidence:.0f}%", fontsize=8)
        _show(a1, it.x_adv)
        colour = "darkred" if it.success else "black"
        verb = "" if it.success else " (failed)"
        a1.set_title(
            f"{len(it.pixels)} px: {it.label_adv}{verb}\n{100 * it.confidence_adv:.0f}%", fontsize=8, color=colour
        )
        hh, ww = it.x.shape[-2:]
        radius = max(2.4, 0.05 * max(hh, ww))
        for r, c in it.pixels:
            a1.add_patch(Circle((c, r), radius, fill=False, edgecolor="yellow", linewidth=1.6))
            a1.add_patch(Circle((c, r), radius * 1.25, fill=False, edgecolor="red", linewidth=0.8))
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
