"""Figures and reports built from results; nothing here runs an attack."""

from advex.report.figure import FigureRow, magnification, three_column_figure

__all__ = ["FigureRow", "magnification", "three_column_figure"]
