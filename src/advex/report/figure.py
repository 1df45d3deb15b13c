"""The seed's figure: one row per image -- x | r magnified | x + r -- with labels."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from advex.data import atomic_write_bytes


@dataclass
class FigureRow:
    name: str
    x: torch.Tensor  # (3, H, W) in [0, 1]
    x_adv: torch.Tensor
    label: str
    confidence: float
    label_adv: str
    confidence_adv: float
    success: bool = True


def magnification(r: torch.Tensor) -> int:
    """A whole-number gain that maps the largest |r| to about half the grey range."""
    m = float(r.abs().max())
    if m <= 0:
        return 1
    return max(1, int(0.5 / m))


def _hwc(t: torch.Tensor):
    return t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def three_column_figure(rows: Sequence[FigureRow], path: str | os.PathLike, title: str | None = None) -> None:
    """Write the x | 0.5 + k*r | x+r figure as a PNG (atomically).

    The middle column shows the perturbation r = x_adv - x around mid-grey (grey is 0),
    multiplied by the gain k written above it, so an invisible change becomes visible.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(rows)
    # each row as tall as its image is at a panel width of 3.4 in, plus room for two title lines
    aspects = [row.x.shape[-2] / row.x.shape[-1] for row in rows]
    heights = [3.4 * a + 0.75 for a in aspects]
    fig, axes = plt.subplots(
        n,
        3,
        figsize=(10.5, sum(heights) + (0.5 if title else 0)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for i, row in enumerate(rows):
        r = row.x_adv - row.x
        k = magnification(r)
        panels = [
            (row.x, f"{row.name}: {row.label}\n{100 * row.confidence:.1f}% confident", "black"),
            (
                (0.5 + k * r),
                f"perturbation r  (x{k}, grey = 0)\nmax |r| = {255 * float(r.abs().max()):.0f}/255",
                "dimgray",
            ),
            (
                row.x_adv,
                f"x + r: {row.label_adv}\n{100 * row.confidence_adv:.1f}% confident",
                "darkred" if row.success else "black",
            ),
        ]
        for j, (img, text, colour) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(_hwc(img), interpolation="lanczos" if max(img.shape[-2:]) > 300 else "nearest")
            ax.set_title(text, fontsize=11, color=colour)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
