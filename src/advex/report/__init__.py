"""Figures and reports built from results (attacks, evaluations, certifications, training
runs); nothing here runs an attack."""

from advex.report.curves import accuracy_vs_eps, certified_vs_eps, training_curves
from advex.report.figure import FigureRow, magnification, three_column_figure
from advex.report.patch import SceneItem, patch_curve, patch_sheet
from advex.report.pixels import PixelItem, pixel_figure

__all__ = [
    "FigureRow",
    "PixelItem",
    "SceneItem",
    "accuracy_vs_eps",
    "certified_vs_eps",
    "magnification",
    "patch_curve",
    "patch_sheet",
    "pixel_figure",
    "three_column_figure",
    "training_curves",
]
