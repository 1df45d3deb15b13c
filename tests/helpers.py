"""Shared by the attack tests."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
needs_data = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/datasets not present")


def robust(res, y) -> float:
    """Fraction of images classified correctly and not broken by the attack."""
    return float(((~res.success) & (res.label == y)).float().mean())
