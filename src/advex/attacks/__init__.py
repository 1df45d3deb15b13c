"""Attacks: crafting adversarial examples.

Every per-image attack is a small configured object on one base class,
:class:`Attack`, called as ``attack(model, x, y=None, *, target=None)`` and returning an
:class:`AttackResult`; a new attack implements one method, ``run(batch) -> Outcome``.
Universal attacks (one patch for many images) follow :class:`UniversalAttack`:
``attack(model, images, target)``. ``pgd_loop`` is the projected-gradient loop that the
gradient attacks, adversarial training and certification all run.

One file (or small package) per family: ``pgd`` (PGD, FGSM, MI-FGSM and the loop),
``apgd``, ``cw``, ``deepfool``, ``square``, ``smoothadv`` (the attack on a smoothed
classifier), ``szegedy`` (with the box solvers of ``optim``), ``onepixel/``, ``patch/``;
``norms`` holds the three hooks each norm gives the gradient attacks; ``base`` the
protocol, ``result`` the result type, ``universal`` the protocol of universal attacks.
"""

from advex.attacks.apgd import APGD
from advex.attacks.base import Attack, Batch, Outcome
from advex.attacks.cw import CW
from advex.attacks.deepfool import DeepFool
from advex.attacks.onepixel import OnePixel, apply_changes
from advex.attacks.patch import (
    Patch,
    PatchEvaluation,
    PatchResult,
    PatchState,
    Placements,
    Printability,
    apply_patch,
    evaluate_patch,
    patch_mask,
)
from advex.attacks.pgd import FGSM, PGD, pgd_loop
from advex.attacks.result import AttackResult
from advex.attacks.smoothadv import SmoothAdv, SoftSmooth
from advex.attacks.square import Square
from advex.attacks.szegedy import Szegedy
from advex.attacks.universal import UniversalAttack
from advex.errors import AdvexWarning
from advex.models import as_classifier, frozen  # where they live: advex.models; kept here for old imports

__all__ = [
    "APGD",
    "CW",
    "FGSM",
    "PGD",
    "AdvexWarning",
    "Attack",
    "AttackResult",
    "Batch",
    "DeepFool",
    "OnePixel",
    "Outcome",
    "Patch",
    "PatchEvaluation",
    "PatchResult",
    "PatchState",
    "Placements",
    "Printability",
    "SmoothAdv",
    "SoftSmooth",
    "Square",
    "Szegedy",
    "UniversalAttack",
    "apply_changes",
    "apply_patch",
    "as_classifier",
    "evaluate_patch",
    "frozen",
    "patch_mask",
    "pgd_loop",
]
