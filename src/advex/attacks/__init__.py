"""Attacks. Each is a small configured object called as ``attack(model, x, y=None, target=None)``
and returns an :class:`AttackResult`."""

from advex.attacks.apgd import APGD
from advex.attacks.base import AttackResult, as_classifier, frozen
from advex.attacks.cw import CW
from advex.attacks.deepfool import DeepFool
from advex.attacks.gradient import FGSM, PGD, AdvexWarning
from advex.attacks.onepixel import OnePixel
from advex.attacks.patch import (
    Patch,
    PatchEvaluation,
    PatchResult,
    Placements,
    Printability,
    apply_patch,
    evaluate_patch,
)
from advex.attacks.square import Square
from advex.attacks.szegedy import Szegedy

__all__ = [
    "APGD",
    "CW",
    "DeepFool",
    "FGSM",
    "PGD",
    "OnePixel",
    "Patch",
    "PatchEvaluation",
    "PatchResult",
    "Placements",
    "Printability",
    "apply_patch",
    "evaluate_patch",
    "AdvexWarning",
    "AttackResult",
    "Square",
    "Szegedy",
    "as_classifier",
    "frozen",
]
