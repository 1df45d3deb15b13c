"""Robust accuracy over an epsilon grid, the worst case over an attack ensemble per sample
(the AutoAttack protocol: APGD-CE, APGD-T with the DLR loss, Square), and the sanity
checks of Carlini et al. (2019), "On evaluating adversarial robustness", that flag an
evaluation which should not be trusted."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
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
    failed on it. With ``sanity`` the Carlini et al. checks run and their findings are in
    ``Evaluation.warnings``.
    """
    check_pixels(x)
    clf = as_classifier(model)
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
    x = x.detach().cpu()
    logits = _logits(clf, x, batch_size)
    y = check_labels(y, x.shape[0], logits.shape[1]).cpu()
    correct = logits.argmax(1) == y
    per_attack: dict[str, list[float]] = {a: [] for a in attacks}
    masks: dict[str, list[torch.Tensor]] = {a: [] for a in attacks}
    times: dict[str, float] = {a: 0.0 for a in attacks}
    for e in eps:
        for a in attacks:
            t0 = time.perf_counter()
            rob = (
                correct.clone()
                if e == 0
                else _robust_under(a, clf, x, y, logits, e, norm, steps, queries, n_targets, seed, batch_size)
            )
            times[a] += time.perf_counter() - t0
            masks[a].append(rob)
            per_attack[a].append(float(rob.float().mean()))
    robust = torch.stack([torch.stack([masks[a][i] for a in attacks]).all(0) for i in range(len(eps))])
    ensemble = [float(r.float().mean()) for r in robust]
    result = Evaluation(
        eps,
        norm,
        len(x),
        float(correct.float().mean()),
        per_attack,
        ensemble,
        robust,
        times=times,
        config={"attacks": list(attacks), "steps": steps, "queries": queries, "n_targets": n_targets, "seed": seed},
    )
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
