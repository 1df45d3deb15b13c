"""The protocol of universal attacks: one perturbation for many images."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from advex.attacks.base import Label, resolve_targets
from advex.errors import AdvexError
from advex.models import Classifier, as_classifier, frozen


class UniversalAttack:
    """The protocol of universal attacks: one perturbation (a patch) for a whole
    distribution of images, trained on some and applied to others.

    ``attack(model | [models], images, target)`` accepts one model or a list (an ensemble),
    checks the images ((N, C, H, W), uint8 or float in [0, 1]), resolves the target class
    by index or name on the first model (every model must know it), freezes every model
    for the call, and calls the subclass's :meth:`fit` with the target's index (and any
    keyword options of ``fit``, such as the patch's state to resume from). Applying
    the result to new images and measuring it are functions of the attack's own module."""

    def __call__(
        self, model: nn.Module | Sequence[nn.Module], images: torch.Tensor, target: Label, **fit_options: Any
    ) -> Any:
        models = [as_classifier(m) for m in (model if isinstance(model, (list, tuple)) else [model])]
        if not models:
            raise AdvexError("give at least one model")
        check_images(images)
        if target is None:
            raise AdvexError(f"{type(self).__name__} needs a target class (index or name)")
        tgt = int(resolve_targets(models[0], target, 1, models[0].device)[0])
        for m in models[1:]:
            resolve_targets(m, tgt, 1, m.device)
        with contextlib.ExitStack() as stack:
            for m in models:
                stack.enter_context(frozen(m))
            return self.fit(models, images, tgt, **fit_options)

    def fit(self, models: list[Classifier], images: torch.Tensor, target: int, **options: Any) -> Any:
        raise NotImplementedError


def check_images(x: Any, what: str = "images") -> tuple[int, int, int]:
    """A non-empty (N, C, H, W) batch, uint8 or float in [0, 1]; returns (C, H, W)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise AdvexError(f"{what} must be a non-empty (N, C, H, W) tensor (uint8, or float in [0, 1]), got {shape}")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise AdvexError(f"{what} must be uint8 or float in [0, 1], got {x.dtype}")
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= 0 and hi <= 1):  # NaN fails too
            raise AdvexError(f"{what} must be pixels in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return tuple(x.shape[1:])
