"""Attacks. Each is a small configured object called as ``attack(model, x, y=None, target=None)``
and returns an :class:`AttackResult`."""

from advex.attacks.apgd import APGD
from advex.attacks.base import AttackResult
from advex.attacks.cw import CW
from advex.attacks.deepfool import DeepFool
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
from advex.attacks.pgd import FGSM, PGD, pgd_loop
from advex.attacks.square import Square
from advex.attacks.szegedy import Szegedy
from advex.errors import AdvexWarning
from advex.models import as_classifier, frozen

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
    "pgd_loop",
    "Szegedy",
    "as_classifier",
    "frozen",
]
