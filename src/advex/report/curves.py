"""Accuracy against epsilon (one line per attack and one for the ensemble; certified against
attacked), and the training curves of a run (loss and accuracies per epoch)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from advex.data import atomic_write_bytes


def _pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, dpi: int) -> None:
    """Lay out, render to PNG and write ``path`` atomically; close the figure."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _finish(fig, ax, path, title: str, clean: float | None, ylabel: str, xlabel: str = "epsilon") -> None:
    """Clean-accuracy line, axes, legend, title; write the PNG atomically."""
    if clean is not None:
        ax.axhline(100 * clean, color="grey", linestyle=":", label=f"clean {100 * clean:.1f}%")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    _save(fig, path, dpi=110)


def accuracy_vs_eps(
    eps: Sequence[float],
    per_attack: dict[str, Sequence[float]],
    ensemble: Sequence[float],
    path: str | os.PathLike,
    title: str,
    clean: float | None = None,
) -> None:
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.2))
    for name, acc in per_attack.items():
        ax.plot(eps, [100 * a for a in acc], "o--", alpha=0.8, label=name)
    ax.plot(eps, [100 * a for a in ensemble], "s-", color="black", linewidth=2.2, label="ensemble (worst case)")
    _finish(fig, ax, path, title, clean, "robust accuracy (%)")


def certified_vs_eps(
    eps: Sequence[float],
    certified: dict[str, Sequence[float]],
    attacked: Sequence[float] | None,
    path: str | os.PathLike,
    title: str,
    clean: float | None = None,
) -> None:
    """Certified accuracy (a lower bound on robust accuracy) per method, and the accuracy
    under attack (an upper bound), against epsilon: the gap is what is not yet proven."""
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.2))
    for name, acc in certified.items():
        ax.plot(eps, [100 * a for a in acc], "s-", linewidth=2, label=f"certified ({name})")
    if attacked is not None:
        ax.plot(eps, [100 * a for a in attacked], "o--", color="tab:red", label="under PGD attack")
        if len(certified) == 1:
            (low,) = certified.values()
            ax.fill_between(eps, [100 * a for a in low], [100 * a for a in attacked], color="tab:red", alpha=0.08,
                            label="not proven, not broken")  # fmt: skip
    _finish(fig, ax, path, title, clean, "accuracy (%)")


def certified_vs_radius(
    radius: Sequence[float],
    correct: Sequence[bool],
    path: str | os.PathLike,
    title: str,
    attacked: tuple[Sequence[float], Sequence[float]] | None = None,
    clean: float | None = None,
) -> None:
    """Randomized smoothing's curve (Cohen et al. 2019, their Figures 6-7): the fraction of
    images whose certified class is right with a certified L2 radius of at least r, against r,
    from each image's ``radius`` and whether its class is ``correct``; with ``attacked``
    (radii, accuracies), the smoothed classifier's accuracy under attack at those radii."""
    import numpy as np

    r = np.asarray(radius, dtype=float)[np.asarray(correct, dtype=bool)]
    n = max(len(correct), 1)
    top = max(float(r.max()) if r.size else 0.0, max(attacked[0]) if attacked else 0.0, 0.25) * 1.05
    grid = np.linspace(0, top, 400)
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.2))
    ax.plot(grid, [100 * float((r >= g).sum()) / n for g in grid], "-", linewidth=2, label="certified (smoothing)")
    if attacked is not None:
        ax.plot(attacked[0], [100 * a for a in attacked[1]], "o--", color="tab:red", label="under SmoothAdv attack")
    _finish(fig, ax, path, title, clean, "accuracy (%)", "L2 radius (pixels in [0, 1])")


def training_curves(history: Sequence[dict], path: str | os.PathLike, title: str) -> None:
    """A training run's curves, one point per epoch: the training loss (left), and the clean
    test, robust (if recorded) and training accuracies (right). ``history`` holds the records
    of ``advex train``'s metrics.json (``epoch``, ``train_loss``, ``train_acc``, ``test_acc``,
    and ``robust_acc`` with its ``robust_label``)."""
    fig, (a, b) = _pyplot().subplots(1, 2, figsize=(10, 3.6))
    ep = [h["epoch"] for h in history]
    a.plot(ep, [h["train_loss"] for h in history], "o-")
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    a.grid(alpha=0.3)
    b.plot(ep, [100 * h["test_acc"] for h in history], "o-", label="clean test")
    if history and history[-1].get("robust_acc") is not None:
        b.plot(ep, [100 * h["robust_acc"] for h in history], "s-", label=history[-1]["robust_label"])
    if history and history[-1].get("noise_acc") is not None:
        b.plot(ep, [100 * h["noise_acc"] for h in history], "^-", label=history[-1]["noise_label"])
    b.plot(ep, [100 * h["train_acc"] for h in history], "--", alpha=0.6, label="train (on the training inputs)")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy (%)")
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path, dpi=100)
