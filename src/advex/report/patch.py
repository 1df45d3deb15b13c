"""Patch figures: a sheet of scenes with the patch and their predictions, the training curve."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from advex.data import atomic_write_bytes
from advex.report.pixels import _show


@dataclass
class SceneItem:
    name: str
    x: torch.Tensor  # (C, H, W) the scene with the patch
    label: str  # prediction without the patch
    confidence: float
    label_patched: str
    confidence_patched: float
    success: bool


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def patch_sheet(
    items: Sequence[SceneItem],
    path: str | os.PathLike,
    *,
    patch: torch.Tensor | None = None,
    title: str | None = None,
    per_row: int | None = None,
) -> None:
    """Scenes with the patch applied, each titled "before -> with the patch (confidence)";
    the patch itself first when given. Written atomically."""
    if not items:
        raise ValueError("patch_sheet needs at least one scene")
    plt = _pyplot()
    h, w = items[0].x.shape[-2:]
    small = max(h, w) <= 64
    panels = len(items) + (patch is not None)
    per_row = min(per_row or (6 if small else 4), panels)
    rows = (panels + per_row - 1) // per_row
    size = 2.0 if small else 2.8
    fig, axes = plt.subplots(
        rows, per_row, figsize=(per_row * size, rows * (size + 0.6) + (0.5 if title else 0)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    flat = list(axes.flat)
    if patch is not None:
        ax = flat.pop(0)
        ax.axis("on")
        _show(ax, patch)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_title("the patch", fontsize=9, fontweight="bold")
    for ax, it in zip(flat, items):
        ax.axis("on")
        for s in ax.spines.values():
            s.set_visible(False)
        _show(ax, it.x)
        ax.set_title(
            f"{it.name}: {it.label} ->\n{it.label_patched} {100 * it.confidence_patched:.0f}%",
            fontsize=7.5,
            color="darkred" if it.success else "black",
        )
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    fig.tight_layout()
    _save(fig, path)


def patch_curve(curve: dict[str, list[float]], path: str | os.PathLike, title: str | None = None) -> None:
    """Training loss -log P(target) and the fraction of samples classified as the target."""
    if not curve.get("step"):
        raise ValueError("patch_curve needs a non-empty curve")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(curve["step"], curve["loss"], color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss  -log P(target)", color="tab:blue")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(curve["step"], [100 * v for v in curve["success"]], color="tab:red")
    ax2.set_ylabel("classified as target (%)", color="tab:red")
    ax2.set_ylim(0, 100)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
