"""Defences: standard and adversarial training (PGD, TRADES, fast FGSM)."""

from advex.defences.train import TrainConfig, TrainRun, clean_accuracy, robust_accuracy, train
from advex.models.archs import make_classifier

__all__ = ["TrainConfig", "TrainRun", "clean_accuracy", "make_classifier", "robust_accuracy", "train"]
