"""Gradient attacks: PGD / BIM in the L-inf, L2 and L1 balls (Madry et al. 2018; Kurakin
et al. 2017), FGSM (Goodfellow et al. 2015) and momentum (MI-FGSM, Dong et al. 2018).

One loop serves every norm; a norm supplies its random start, steepest direction and
projection (`advex.attacks.norms`). Batched: each image has its own state, and with
``early_stop`` an image leaves the batch at the first iterate that succeeds (that iterate
is returned), so later steps cost nothing for it. Restarts rerun only the images that are
still unbroken, from a new random start.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from advex.attacks.base import (  # noqa: F401 - re-exported: check_pixels, warn_if_probabilities
    AdvexWarning,
    AttackResult,
    Targets,
    as_classifier,
    check_pixels,
    finish,
    frozen,
    setup,
    warn_if_probabilities,
)
from advex.attacks.norms import NORMS
from advex.errors import AdvexError


class PGD:
    """Projected gradient descent with random start and restarts.

    Args:
        eps: radius of the ball (pixels in [0, 1]: 8/255, not 8).
        steps: iterations per restart.
        step_size: default 2.5 * eps / steps (Madry et al.'s rule of thumb).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        restarts: runs from fresh random starts for the images still unbroken.
        random_start: start uniformly inside the ball (False: from x itself, i.e. BIM).
        momentum: decay of the MI-FGSM momentum of L1-normalised gradients (0: none).
        early_stop: stop each image at its first successful iterate.
        seed: seeds the random starts; same seed, same result on the same device.
        bf16: opt-in fast path: the attack's forward and backward passes run under bfloat16
            autocast (the iterate, the projection and the final success check stay fp32).
            Meant for GPUs with bf16 tensor cores; on most CPUs it is slower.
    """

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 10,
        step_size: float | None = None,
        norm: Literal["linf", "l2", "l1"] = "linf",
        restarts: int = 1,
        random_start: bool = True,
        momentum: float = 0.0,
        early_stop: bool = True,
        seed: int = 0,
        bf16: bool = False,
    ) -> None:
        if norm not in NORMS:
            raise AdvexError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
        if not eps > 0:
            raise AdvexError(f"eps must be > 0, got {eps}")
        if norm == "linf" and eps > 1:
            warnings.warn(
                f"eps={eps} for L-inf is larger than the whole [0, 1] pixel range; eps is in [0, 1] "
                f"units (did you mean {eps}/255 = {eps / 255:.4f}?)",
                AdvexWarning,
                stacklevel=2,
            )
        if steps < 1 or restarts < 1:
            raise AdvexError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
        if step_size is not None and not step_size > 0:
            raise AdvexError(f"step_size must be > 0, got {step_size}")
        if not 0 <= momentum <= 1:
            raise AdvexError(f"momentum must be in [0, 1], got {momentum}")
        self.eps = float(eps)
        self.steps = steps
        self.step_size = float(step_size) if step_size is not None else 2.5 * eps / steps
        self.norm = norm
        self.restarts = restarts
        self.random_start = random_start
        self.momentum = momentum
        self.early_stop = early_stop
        self.seed = seed
        self.bf16 = bf16

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eps={self.eps:g}, steps={self.steps}, step_size={self.step_size:g}, "
            f"norm={self.norm!r}, restarts={self.restarts})"
        )

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, target: Targets = None
    ) -> AttackResult:
        """Attack ``x`` (N, C, H, W) in [0, 1]; untargeted away from ``y`` (default: the
        model's prediction) or towards ``target`` (a class index/name, or one per image)."""
        clf = as_classifier(model)
        norm = NORMS[self.norm]
        with frozen(clf):
            st = setup(clf, x, y, target)
            x, goal, hit = st.x, st.goal, st.hit
            n, dev, targeted = x.shape[0], x.device, st.targeted
            sign = -1.0 if targeted else 1.0
            eps = torch.full((n,), self.eps, device=dev)
            gen = torch.Generator(dev).manual_seed(self.seed)
            best = x.clone()
            # already broken (untargeted: misclassified) at r = 0
            success = (st.label == st.target) if targeted else (st.label != st.y)
            evals = torch.zeros(n, dtype=torch.long, device=dev)
            for restart in range(self.restarts):
                ids = (~success).nonzero().flatten()
                if ids.numel() == 0:
                    break
                # the images still running, kept compact: finished ones are dropped once, so a
                # step indexes nothing while no image finishes
                xi, gi, ei = x[ids], goal[ids], eps[ids]
                d = norm.random(xi.shape, ei, gen, dev, xi.dtype) if self.random_start else torch.zeros_like(xi)
                if self.norm == "linf":  # ball and box are one box: a single clamp per step
                    e4 = ei.view(-1, 1, 1, 1)
                    lo, hi = torch.maximum(-e4, -xi), torch.minimum(e4, 1 - xi)
                d = (xi + d).clamp(0, 1) - xi
                mom = torch.zeros_like(xi)
                for _ in range(self.steps):
                    d.requires_grad_(True)
                    with torch.enable_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=self.bf16):
                        z = clf(xi + d).float()
                        loss = F.cross_entropy(z, gi, reduction="sum")
                        (g,) = torch.autograd.grad(loss, d)
                    d = d.detach()
                    evals[ids] += 1
                    if self.early_stop:
                        ok = hit(z.detach(), ids)
                        if ok.any():
                            best[ids[ok]] = xi[ok] + d[ok]
                            success[ids[ok]] = True
                            keep = ~ok
                            xi, gi, ei, ids, d, g = xi[keep], gi[keep], ei[keep], ids[keep], d[keep], g[keep]
                            mom = mom[keep]
                            if self.norm == "linf":
                                lo, hi = lo[keep], hi[keep]
                            if ids.numel() == 0:
                                break
                    if self.momentum > 0:
                        l1 = g.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))
                        mom = self.momentum * mom + g / l1
                        g = mom
                    if self.norm == "linf":
                        direction = g.sign() if self.momentum > 0 else g.sign_()  # g may be the momentum
                        d = d.add_(direction, alpha=sign * self.step_size).clamp_(lo, hi)  # in place
                    else:
                        d = norm.project(d + sign * self.step_size * norm.direction(g), ei)
                        d = (xi + d).clamp(0, 1) - xi
                if ids.numel():
                    best[ids] = xi + d  # none of these has succeeded yet: keep the last iterate
                    if restart < self.restarts - 1:  # the next restart needs to know who is left
                        with torch.no_grad():
                            success[ids[hit(clf(xi + d).float(), ids)]] = True
            return finish(st, best, evals)


class FGSM(PGD):
    """The fast gradient sign method (Goodfellow et al. 2015): one step of size eps from x.

    With ``norm="l2"`` or ``"l1"`` it is the fast gradient method in that norm."""

    def __init__(
        self, *, eps: float, norm: Literal["linf", "l2", "l1"] = "linf", random_start: bool = False, seed: int = 0
    ) -> None:
        super().__init__(
            eps=eps,
            steps=1,
            step_size=eps,
            norm=norm,
            restarts=1,
            random_start=random_start,
            early_stop=False,
            seed=seed,
        )
