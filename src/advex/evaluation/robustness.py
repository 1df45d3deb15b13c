"""Robust accuracy over an epsilon grid, the worst case over an attack ensemble per sample
(the AutoAttack protocol: APGD-CE, APGD-T with the DLR loss, Square), and the sanity
checks of Carlini et al. (2019), "On evaluating adversarial robustness", that flag an
evaluation which should not be trusted."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advex.attacks import APGD, FGSM, PGD, Square
from advex.errors import AdvexError
from advex.models import as_classifier, check_labels, check_logits, check_pixels

ATTACKS = ("apgd-ce", "apgd-t", "square", "pgd", "fgsm")
DEFAULT_ENSEMBLE = ("apgd-ce", "apgd-t", "square")


@dataclass
class Evaluation:
    """Robust accuracy per attack and for the ensemble, at each eps."""

    eps: list[float]
    norm: str
    n: int
    clean_acc: float
    per_attack: dict[str, list[float]]
    ensemble: list[float]
    robust: torch.Tensor  # (len(eps), n) bool: robust to every attack
    warnings: list[str] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "norm": self.norm,
            "n": self.n,
            "clean_acc": self.clean_acc,
            "per_attack": self.per_attack,
            "ensemble": self.ensemble,
            "warnings": self.warnings,
            "times_s": self.times,
            "config": self.config,
        }


def _make(name: str, eps: float, norm: str, steps: int, queries: int, seed: int):
    if name == "apgd-ce":
        return APGD(eps=eps, norm=norm, steps=steps, loss="ce", seed=seed)
    if name == "apgd-t":
        return APGD(eps=eps, norm=norm, steps=steps, loss="dlr", seed=seed)
    if name == "square":
        return Square(eps=eps, queries=queries, norm=norm, seed=seed)
    if name == "pgd":
        return PGD(eps=eps, norm=norm, steps=steps, seed=seed)
    if name == "fgsm":
        return FGSM(eps=eps, norm=norm)
    raise AdvexError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")


@torch.no_grad()
def _logits(model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Clean logits of ``x`` (on the CPU), computed once per evaluation, in chunks."""
    chunks = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
    return torch.cat([check_logits(model(c.to(model.device)), len(c)).float().cpu() for c in chunks])


def _robust_under(name, model, x, y, logits, eps, norm, steps, queries, n_targets, seed, batch_size) -> torch.Tensor:
    """(N,) bool: correctly classified (by the clean ``logits``) and not broken by attack ``name``."""
    out = torch.zeros(x.shape[0], dtype=torch.bool)
    for i in range(0, x.shape[0], batch_size):
        xb, yb, z = x[i : i + batch_size], y[i : i + batch_size], logits[i : i + batch_size]
        rob = z.argmax(1) == yb
        if name == "apgd-t":  # targeted DLR against each of the top n_targets other classes
            order = z.scatter(1, yb[:, None], float("-inf")).argsort(dim=1, descending=True)
            for k in range(min(n_targets, z.shape[1] - 1)):
                idx = rob.nonzero().flatten()
                if idx.numel() == 0:
                    break
                res = _make(name, eps, norm, steps, queries, seed)(model, xb[idx], yb[idx], target=order[idx, k])
                rob[idx[res.success]] = False
        else:
            idx = rob.nonzero().flatten()
            if idx.numel():
                res = _make(name, eps, norm, steps, queries, seed)(model, xb[idx], yb[idx])
                rob[idx[res.success]] = False
        out[i : i + batch_size] = rob
    return out


def check_request(eps: Sequence[float], norm: str, attacks: Sequence[str]) -> list[float]:
    """The checks of an evaluation's settings, before any work; the eps grid, sorted."""
    eps = sorted(float(e) for e in eps)
    if not eps or not all(math.isfinite(e) and e >= 0 for e in eps):
        raise AdvexError(f"eps must be one or more finite radii >= 0, got {eps}")
    if norm == "linf" and eps[-1] > 1:
        raise AdvexError(f"eps {eps[-1]:g} is larger than the whole [0, 1] pixel range of an L-inf radius")
    if norm not in ("linf", "l2"):
        raise AdvexError(f"evaluate supports norm 'linf' or 'l2', got {norm!r}")
    for a in attacks:
        if a not in ATTACKS:
            raise AdvexError(f"unknown attack {a!r}; choose from {', '.join(ATTACKS)}")
    return eps


def attack_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    *,
    norm: str,
    attacks: Sequence[str],
    steps: int,
    queries: int,
    n_targets: int,
    seed: int,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One batch of an evaluation, as plain lists (a run journal keeps them): ``correct``
    per image, ``robust[attack]`` per eps per image, and seconds per attack. ``status`` hears
    which attack and eps runs now."""
    clf = as_classifier(model)
    x = x.detach().cpu()
    logits = _logits(clf, x, max(len(x), 1))
    y = check_labels(y, x.shape[0], logits.shape[1]).cpu()
    correct = logits.argmax(1) == y
    robust: dict[str, list[list[bool]]] = {a: [] for a in attacks}
    times = {a: 0.0 for a in attacks}
    for e in eps:
        for a in attacks:
            if status is not None:
                status(f"{a} eps {e:.4g}")
            t0 = time.perf_counter()
            rob = (
                correct.clone()
                if e == 0
                else _robust_under(a, clf, x, y, logits, e, norm, steps, queries, n_targets, seed, max(len(x), 1))
            )
            times[a] += time.perf_counter() - t0
            robust[a].append(rob.tolist())
    return {"correct": correct.tolist(), "robust": robust, "times": times}


def combine(parts: Sequence[dict[str, Any]], eps: Sequence[float], norm: str, config: dict[str, Any]) -> Evaluation:
    """The evaluation of all images from its batches' :func:`attack_batch` results, in order."""
    attacks = list(config["attacks"])
    correct = torch.tensor([c for p in parts for c in p["correct"]], dtype=torch.bool)
    masks = {
        a: torch.tensor([[r for p in parts for r in p["robust"][a][i]] for i in range(len(eps))], dtype=torch.bool)
        for a in attacks
    }
    n = correct.numel()
    robust = torch.stack([masks[a] for a in attacks]).all(0) if n else torch.zeros(len(eps), 0, dtype=torch.bool)
    mean = (lambda t: float(t.float().mean())) if n else (lambda t: 0.0)
    return Evaluation(
        list(eps),
        norm,
        n,
        mean(correct),
        {a: [mean(masks[a][i]) for i in range(len(eps))] for a in attacks},
        [mean(r) for r in robust],
        robust,
        times={a: sum(p["times"][a] for p in parts) for a in attacks},
        config=dict(config),
    )


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    *,
    norm: str = "linf",
    attacks: Sequence[str] = DEFAULT_ENSEMBLE,
    steps: int = 100,
    queries: int = 5000,
    n_targets: int = 9,
    seed: int = 0,
    batch_size: int = 500,
    sanity: bool = True,
) -> Evaluation:
    """Robust accuracy of ``model`` on (x, y) at every eps, per attack and for the ensemble.

    An image counts as robust at eps only if it is classified correctly and every attack
    failed on it. Batches of ``batch_size`` images run one after another, each seeded by its
    first image's position (``seed`` + position), as a sharded or resumed run of ``advex
    evaluate`` does. With ``sanity`` the Carlini et al. checks run and their findings are in
    ``Evaluation.warnings``.
    """
    check_pixels(x)
    eps = check_request(eps, norm, attacks)
    clf = as_classifier(model)
    x = x.detach().cpu()
    classes = _logits(clf, x[:batch_size], batch_size).shape[1] if len(x) else 0
    y = check_labels(y, x.shape[0], classes).cpu()  # every label, before the first batch
    config = {"attacks": list(attacks), "steps": steps, "queries": queries, "n_targets": n_targets, "seed": seed}
    parts = [
        attack_batch(clf, x[i : i + batch_size], y[i : i + batch_size], eps, norm=norm, attacks=attacks,
                     steps=steps, queries=queries, n_targets=n_targets, seed=(seed + i) % 2**32)
        for i in range(0, x.shape[0], batch_size)
    ]  # fmt: skip
    result = combine(parts, eps, norm, config)
    if sanity:
        result.warnings = sanity_checks(clf, x, y, result, steps=steps, seed=seed, batch_size=batch_size)
    return result


def sanity_checks(model, x, y, ev: Evaluation, *, steps: int, seed: int, batch_size: int) -> list[str]:
    """The checks of Carlini et al. (2019) that a trustworthy evaluation passes."""
    model = as_classifier(model)
    found: list[str] = []
    acc = ev.ensemble
    for i in range(1, len(acc)):
        if acc[i] > acc[i - 1] + 1e-9:
            found.append(
                f"accuracy rises with eps ({100 * acc[i - 1]:.1f}% at {ev.eps[i - 1]:g} -> "
                f"{100 * acc[i]:.1f}% at {ev.eps[i]:g}): the attacks are failing to optimise"
            )
    big = 1.0 if ev.norm == "linf" else math.sqrt(x[0].numel())
    n_sub = min(len(x), 200)  # the checks run on the first 200 images
    xs, ys, zs = x[:n_sub], y[:n_sub], _logits(model, x[:n_sub], batch_size)
    rob = _robust_under("apgd-ce", model, xs, ys, zs, big, ev.norm, steps, 0, 0, seed, batch_size)
    if rob.float().mean() > 0.02:
        found.append(
            f"unbounded attack check: at eps={big:g} (the whole input space) {100 * rob.float().mean():.1f}% "
            "of images are still 'robust'; expected ~0%: gradient masking or a broken attack"
        )
    for i, e in enumerate(ev.eps):
        if "square" in ev.per_attack and "apgd-ce" in ev.per_attack:
            if ev.per_attack["square"][i] < ev.per_attack["apgd-ce"][i] - 0.01:
                found.append(
                    f"black-box Square beats white-box APGD-CE at eps {e:g} "
                    f"({100 * ev.per_attack['square'][i]:.1f}% vs {100 * ev.per_attack['apgd-ce'][i]:.1f}%): "
                    "gradients are misleading (gradient masking suspected)"
                )
    e = ev.eps[-1]
    if e > 0:
        few = _robust_under("fgsm", model, xs, ys, zs, e, ev.norm, 1, 0, 0, seed, batch_size)
        many = _robust_under("pgd", model, xs, ys, zs, e, ev.norm, steps, 0, 0, seed, batch_size)
        if many.float().mean() > few.float().mean() + 0.01:
            found.append(
                f"many steps are weaker than one at eps {e:g} (PGD-{steps} {100 * many.float().mean():.1f}% "
                f"vs FGSM {100 * few.float().mean():.1f}%): gradient masking suspected"
            )
    return found
