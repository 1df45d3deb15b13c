"""Robustness evaluation: robust accuracy over an eps grid, ensembles, sanity checks."""

from advex.evaluation.robustness import ATTACKS, DEFAULT_ENSEMBLE, Evaluation, evaluate, sanity_checks
from advex.evaluation.select import first_correct

__all__ = ["ATTACKS", "DEFAULT_ENSEMBLE", "Evaluation", "evaluate", "first_correct", "sanity_checks"]
