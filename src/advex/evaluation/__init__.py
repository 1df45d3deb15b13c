"""Robustness evaluation: robust accuracy over an eps grid, ensembles, sanity checks, and the
quick clean / PGD / certified accuracies recorded during training."""

from advex.evaluation.accuracy import (
    batch_starts,
    certified_accuracy,
    clean_accuracy,
    count_correct,
    count_robust,
    robust_accuracy,
)
from advex.evaluation.robustness import ATTACKS, DEFAULT_ENSEMBLE, Evaluation, evaluate, sanity_checks
from advex.evaluation.select import first_correct

__all__ = [
    "ATTACKS",
    "DEFAULT_ENSEMBLE",
    "Evaluation",
    "batch_starts",
    "certified_accuracy",
    "clean_accuracy",
    "count_correct",
    "count_robust",
    "evaluate",
    "first_correct",
    "robust_accuracy",
    "sanity_checks",
]
