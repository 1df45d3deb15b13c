"""What to train and how: :class:`TrainConfig`, its per-dataset defaults, and the checks that
turn a user's choices into a complete, valid configuration (``TrainConfig.resolved``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from advex.data import DATASETS
from advex.defences.losses import CERTIFIED, DEFENCES, SMOOTHING
from advex.errors import AdvexError
from advex.models import ARCHS

DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": dict(
        epochs=10,
        batch_size=128,
        lr=1e-3,
        optimizer="adam",
        weight_decay=0.0,
        attack_steps=20,
        eps_ramp=0.3,
        augment=False,
    ),
    "cifar10": dict(
        epochs=30,
        batch_size=128,
        lr=0.05,
        optimizer="sgd",
        weight_decay=5e-4,
        attack_steps=7,
        eps_ramp=0.3,
        augment=True,
    ),
}


@dataclass
class TrainConfig:
    """What to train and how. ``None`` fields take the per-dataset defaults (``DEFAULTS``)."""

    dataset: str = "mnist"
    arch: str = "small"
    defence: str = "none"
    eps: float = 0.0
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    attack_steps: int | None = None
    step_size: float | None = None  # PGD/TRADES step at full eps (default 2.5 * eps / steps)
    eps_ramp: float | None = None  # fraction of training over which eps grows linearly from 0
    trades_beta: float = 6.0
    kappa_end: float | None = None  # certified training: final weight of the natural loss (IBP 0.5, CROWN-IBP 0)
    init: str | None = None  # "default" (PyTorch's) or "ibp" (Shi et al. 2021; the default for certified training)
    fast_alpha: float = 1.25
    sigma: float | None = None  # gaussian / smoothadv: the noise's standard deviation (pixels in [0, 1])
    noise_samples: int = 1  # smoothadv: noise draws per image (Salman et al.'s m)
    augment: bool | None = None
    eval_n: int = 1000  # test images for the per-epoch robust accuracy
    eval_steps: int = 20
    train_n: int | None = None  # train on the first n images only (smoke runs)
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs, tests)
    seed: int = 0
    data_dir: str | None = None

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` filled in (dataset defaults, then those that depend on the
        defence), every choice checked; raises :class:`AdvexError` naming the first bad one."""
        _check_choices(self)
        kw = asdict(self)
        for k, v in DEFAULTS[self.dataset].items():
            if kw[k] is None:
                kw[k] = v
        _fill_defence_defaults(kw)
        _check_values(kw)
        return TrainConfig(**kw)

    def resumed(self, saved: dict[str, Any], where: str = "the saved run") -> TrainConfig:
        """The configuration of a saved run (its ``config.json``), continued: this one's
        ``epochs`` and ``max_steps``, if set, extend it and its ``data_dir``, if set, is where
        the data now is. Any other setting this one gives (one that differs from
        ``TrainConfig``'s default) must equal the saved run's: resuming never silently trains
        something else. Raises :class:`AdvexError` naming every difference."""
        names = {f.name for f in fields(TrainConfig)}
        kw = {k: v for k, v in saved.items() if k in names}
        default = TrainConfig()
        differ = [
            f"{k} {kw.get(k)!r} there, {getattr(self, k)!r} here"
            for k in sorted(names - set(RESUME_MAY_CHANGE))
            if getattr(self, k) != getattr(default, k) and getattr(self, k) != kw.get(k)
        ]
        if differ:
            raise AdvexError(
                f"cannot resume {where} with other settings ({'; '.join(differ)}): only "
                f"{', '.join(RESUME_MAY_CHANGE)} may change; drop the others or train into another --out"
            )
        for k in RESUME_MAY_CHANGE:
            if getattr(self, k) is not None:
                kw[k] = getattr(self, k)
        return TrainConfig(**kw)


RESUME_MAY_CHANGE = ("epochs", "max_steps", "data_dir")


def _check_choices(cfg: TrainConfig) -> None:
    if cfg.dataset not in DATASETS:
        raise AdvexError(f"unknown dataset {cfg.dataset!r}; choose from {', '.join(DATASETS)}")
    if cfg.arch not in ARCHS:
        raise AdvexError(f"unknown architecture {cfg.arch!r}; choose from {', '.join(ARCHS)}")
    if cfg.defence not in DEFENCES:
        raise AdvexError(f"unknown defence {cfg.defence!r}; choose from {', '.join(DEFENCES)}")
    if cfg.defence == "smoothadv":  # an L2 radius
        if not (isinstance(cfg.eps, (int, float)) and 0 <= cfg.eps <= 100):
            raise AdvexError(f"eps for smoothadv is an L2 radius in [0, 100] (pixels in [0, 1]), got {cfg.eps}")
    elif not 0 <= cfg.eps <= 1:
        raise AdvexError(
            f"eps must be in [0, 1] (pixels in [0, 1]; e.g. 0.3 for MNIST, 8/255 for CIFAR), got {cfg.eps}"
        )
    if cfg.defence not in ("none", "gaussian") and cfg.eps == 0:
        raise AdvexError(f"--defence {cfg.defence} needs --eps > 0")
    if cfg.defence == "gaussian" and cfg.eps != 0:
        raise AdvexError("--defence gaussian trains under noise only and takes no --eps (smoothadv adds an attack)")
    if cfg.defence in SMOOTHING:
        if (
            cfg.sigma is None
            or not (isinstance(cfg.sigma, (int, float)) and math.isfinite(cfg.sigma))
            or cfg.sigma <= 0
        ):
            raise AdvexError(f"--defence {cfg.defence} needs --sigma > 0, the noise's standard deviation (e.g. 0.25)")
    elif cfg.sigma is not None:
        raise AdvexError(f"--sigma goes with --defence gaussian or smoothadv, not {cfg.defence}")
    if isinstance(cfg.noise_samples, bool) or not isinstance(cfg.noise_samples, int) or cfg.noise_samples < 1:
        raise AdvexError(f"noise_samples must be a whole number >= 1, got {cfg.noise_samples!r}")
    if cfg.noise_samples != 1 and cfg.defence != "smoothadv":
        raise AdvexError("--noise-samples goes with --defence smoothadv")


def _fill_defence_defaults(kw: dict[str, Any]) -> None:
    """The defaults that depend on the defence: no eps ramp without an attack; the certified
    losses' final natural-loss weight and initialisation; the attack step at full eps."""
    if kw["defence"] == "none":
        kw["eps_ramp"] = 0.0
    if kw["kappa_end"] is None:
        kw["kappa_end"] = 0.0 if kw["defence"] in ("crown-ibp", "convex") else 0.5
    if kw["init"] is None:
        kw["init"] = "ibp" if kw["defence"] in CERTIFIED else "default"
    if kw["defence"] == "gaussian":
        kw["eps_ramp"] = 0.0
    if kw["step_size"] is None:  # SmoothAdv: 2 eps / steps (Salman et al.); the others 2.5 eps / steps (Madry et al.)
        kw["step_size"] = (2.0 if kw["defence"] == "smoothadv" else 2.5) * kw["eps"] / max(kw["attack_steps"], 1)


def _check_values(kw: dict[str, Any]) -> None:
    for k in ("eps", "lr", "weight_decay", "step_size", "eps_ramp", "trades_beta", "kappa_end", "fast_alpha"):
        if not isinstance(kw[k], (int, float)) or not math.isfinite(kw[k]):
            raise AdvexError(f"{k} must be a finite number, got {kw[k]!r}")
    if kw["init"] not in ("default", "ibp"):
        raise AdvexError(f"unknown init {kw['init']!r}; use default or ibp")
    if not 0 <= kw["kappa_end"] <= 1:
        raise AdvexError(f"kappa_end must be in [0, 1], got {kw['kappa_end']}")
    if kw["weight_decay"] < 0 or kw["lr"] <= 0:
        raise AdvexError(f"lr must be > 0 and weight_decay >= 0, got {kw['lr']} and {kw['weight_decay']}")
    if kw["step_size"] < 0 or kw["trades_beta"] < 0 or kw["fast_alpha"] <= 0:
        raise AdvexError(
            f"step_size and trades_beta must be >= 0 and fast_alpha > 0, got {kw['step_size']}, "
            f"{kw['trades_beta']} and {kw['fast_alpha']}"
        )
    if kw["optimizer"] not in ("sgd", "adam"):
        raise AdvexError(f"unknown optimizer {kw['optimizer']!r}; use sgd or adam")
    for k in ("epochs", "batch_size", "attack_steps", "eval_n", "eval_steps", "train_n", "max_steps"):
        if kw[k] is not None and (not isinstance(kw[k], int) or kw[k] < 1):
            raise AdvexError(f"{k} must be a whole number >= 1, got {kw[k]!r}")
    if not 0 <= kw["eps_ramp"] <= 1:
        raise AdvexError(f"eps_ramp is a fraction of training in [0, 1], got {kw['eps_ramp']}")
