"""Robustness evaluation: robust accuracy over an eps grid, ensembles, sanity checks, the
quick clean / PGD / certified accuracies recorded during training, and the machinery of long
runs: batches dealt out to torchrun processes, journals for --resume, the heap kept in check."""

from advex.evaluation.accuracy import (
    batch_starts,
    certified_accuracy,
    clean_accuracy,
    count_correct,
    count_noisy,
    count_robust,
    robust_accuracy,
)
from advex.evaluation.journal import Journal
from advex.evaluation.memory import HeapTrim, reuse_freed_memory
from advex.evaluation.robustness import (
    ATTACKS,
    DEFAULT_ENSEMBLE,
    Evaluation,
    attack_batch,
    check_request,
    combine,
    evaluate,
    sanity_checks,
)
from advex.evaluation.runner import Done, batch_seed, run_batches, spans
from advex.evaluation.select import first_correct, first_correct_in
from advex.evaluation.shard import Processes, gather, setup

__all__ = [
    "ATTACKS",
    "DEFAULT_ENSEMBLE",
    "Done",
    "Evaluation",
    "HeapTrim",
    "Journal",
    "Processes",
    "attack_batch",
    "batch_seed",
    "batch_starts",
    "check_request",
    "combine",
    "certified_accuracy",
    "clean_accuracy",
    "count_correct",
    "count_noisy",
    "count_robust",
    "evaluate",
    "first_correct",
    "first_correct_in",
    "gather",
    "reuse_freed_memory",
    "robust_accuracy",
    "run_batches",
    "sanity_checks",
    "setup",
    "spans",
]
