"""Defences: standard and adversarial training (PGD, TRADES, fast FGSM)."""

from advex.defences.train import TrainConfig, TrainRun, train
from advex.models.archs import make_classifier

__all__ = ["TrainConfig", "TrainRun", "make_classifier", "train"]
