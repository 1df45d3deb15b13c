"""Figures and reports built from results; nothing here runs an attack."""

from advex.report.curves import accuracy_vs_eps
from advex.report.figure import FigureRow, magnification, three_column_figure

__all__ = ["FigureRow", "accuracy_vs_eps", "magnification", "three_column_figure"]
