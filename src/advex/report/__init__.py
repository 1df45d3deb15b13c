"""Figures, tables and summaries built from results (attacks, evaluations, certifications,
training runs), and the self-contained HTML report of a run folder; nothing here runs an attack.

A leaf of the package graph: it imports only ``advex.data`` (atomic writes) and
``advex.errors``, and any layer above may use it."""

from advex.report.curves import accuracy_vs_eps, certified_vs_eps, certified_vs_radius, training_curves
from advex.report.figure import FigureRow, magnification, three_column_figure
from advex.report.html import build_report
from advex.report.patch import SceneItem, patch_curve, patch_sheet
from advex.report.pixels import PixelItem, pixel_figure
from advex.report.progress import ProgressBar
from advex.report.summary import machine, print_table, provenance, table, write_summary

__all__ = [
    "FigureRow",
    "PixelItem",
    "ProgressBar",
    "SceneItem",
    "accuracy_vs_eps",
    "build_report",
    "certified_vs_eps",
    "certified_vs_radius",
    "magnification",
    "patch_curve",
    "patch_sheet",
    "pixel_figure",
    "three_column_figure",
    "training_curves",
    "machine",
    "print_table",
    "provenance",
    "table",
    "write_summary",
]
