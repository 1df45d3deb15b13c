"""Accuracy against epsilon: one line per attack and one for the ensemble."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from advex.data import atomic_write_bytes


def _finish(fig, ax, path, title: str, clean: float | None, ylabel: str) -> None:
    """Clean-accuracy line, axes, legend, title; write the PNG atomically."""
    import matplotlib.pyplot as plt

    if clean is not None:
        ax.axhline(100 * clean, color="grey", linestyle=":", label=f"clean {100 * clean:.1f}%")
    ax.set_xlabel("epsilon")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def accuracy_vs_eps(
    eps: Sequence[float],
    per_attack: dict[str, Sequence[float]],
    ensemble: Sequence[float],
    path: str | os.PathLike,
    title: str,
    clean: float | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
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
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, acc in certified.items():
        ax.plot(eps, [100 * a for a in acc], "s-", linewidth=2, label=f"certified ({name})")
    if attacked is not None:
        ax.plot(eps, [100 * a for a in attacked], "o--", color="tab:red", label="under PGD attack")
        if len(certified) == 1:
            (low,) = certified.values()
            ax.fill_between(eps, [100 * a for a in low], [100 * a for a in attacked], color="tab:red", alpha=0.08,
                            label="not proven, not broken")  # fmt: skip
    _finish(fig, ax, path, title, clean, "accuracy (%)")
