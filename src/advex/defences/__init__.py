"""Defences: standard, adversarial (PGD, TRADES, fast FGSM) and certified (IBP, CROWN-IBP,
convex) training, on one process or data-parallel under torchrun.

``train(TrainConfig(...), out)`` runs the loop (``loop``); the configuration and its
per-dataset defaults are in ``config``, the run folder's files (checkpoints, metrics, card)
in ``checkpoint``, the process group in ``distributed``, the training objectives in
``losses``. Accuracies come from ``advex.evaluation``, the curves from ``advex.report``.
"""

from advex.defences.config import DEFAULTS, TrainConfig
from advex.defences.loop import TrainRun, train
from advex.defences.losses import CERTIFIED, DEFENCES

__all__ = ["CERTIFIED", "DEFAULTS", "DEFENCES", "TrainConfig", "TrainRun", "train"]
