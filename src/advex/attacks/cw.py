"""Carlini & Wagner (2017) L2 attack: minimise ||x' - x||^2 + c * f(x') over x' in the
pixel box, with f = max(max_{i != t} Z_i - Z_t, -kappa) (targeted) or
max(Z_y - max_{i != y} Z_i, -kappa); Adam, a per-image binary search over c, and an
optional early abort when the loss stops falling.

How the box is kept (``box``):

- ``"clip"`` (default): Adam on x' itself, each step clipped to [0, 1] (C&W's "projected
  gradient descent"). The step is the one the change of variables takes at mid-grey
  (dx'/dw = 1/2), lr / 2 in pixels, at every pixel, annealed to 0 over each search step's
  ``steps`` (cosine), so the last steps refine rather than jitter by +-lr/2.
- ``"tanh"``: the paper's change of variables x' = (tanh(w) + 1) / 2 with Adam on w. Its
  weakness is at the box's edges: a pixel at exactly 0 or 1 starts at w = atanh(1 - 2e-6)
  = 7.25, where dx'/dw = 1e-6, and Adam's step is ``lr`` in w, not in pixels. With the
  usual lr = 0.01 a pixel at 0 needs ~400 steps before it moves by 1/255, so within 100
  steps the MNIST background (84% of the pixels at exactly 0) cannot take part. Foolbox's
  and torchattacks' C&W share it (Foolbox hides it: for an image it fails on, it returns an
  all-black image, which most models misclassify, so it counts as a success).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from advex.attacks.base import Attack, Batch, Outcome, margin
from advex.errors import AdvexError

BOXES = ("clip", "tanh")


class CW(Attack):
    """C&W L2. ``c`` is the initial trade-off, refined per image by ``search_steps`` of
    binary search (1: keep ``c`` fixed); ``steps`` Adam iterations of ``lr`` per search step.
    ``box``: ``"clip"`` (Adam on the pixels, clipped to [0, 1]) or ``"tanh"`` (the paper's
    change of variables, which cannot move pixels at exactly 0 or 1 in a few hundred steps;
    see the module docstring). ``abort_early`` stops an image whose loss fell by less than
    0.01% over a tenth of the steps (C&W's rule, per image); off by default, as it can
    leave a slightly larger L2."""

    def __init__(
        self,
        *,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 100,
        lr: float = 0.01,
        search_steps: int = 1,
        abort_early: bool = False,
        box: Literal["clip", "tanh"] = "clip",
    ) -> None:
        if not c > 0:
            raise AdvexError(f"c must be > 0, got {c}")
        if steps < 1 or search_steps < 1:
            raise AdvexError("steps and search_steps must be >= 1")
        if kappa < 0:
            raise AdvexError(f"kappa must be >= 0, got {kappa}")
        if not lr > 0:
            raise AdvexError(f"lr must be > 0, got {lr}")
        if box not in BOXES:
            raise AdvexError(f"unknown box {box!r}; use 'clip' (Adam on the pixels) or 'tanh' (change of variables)")
        self.c, self.kappa, self.steps, self.lr = float(c), float(kappa), steps, float(lr)
        self.search_steps, self.abort_early, self.box = search_steps, abort_early, box

    def __repr__(self) -> str:
        return (
            f"CW(c={self.c:g}, kappa={self.kappa:g}, steps={self.steps}, lr={self.lr:g}, "
            f"search_steps={self.search_steps}, box={self.box!r})"
        )

    def adversarial(self, z: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
        """Success with confidence kappa: f(x') = max(margin, -kappa) at its floor."""
        m = margin(z, goal, targeted)
        return (m < 0) if self.kappa == 0 else (m <= -self.kappa)

    def starts_at_clean(self) -> bool:
        return self.box == "clip"  # the first step is at x' = x (tanh: at x up to its clipping)

    def run(self, batch: Batch) -> Outcome:
        x, n, dev = batch.x, len(batch), batch.device
        c = torch.full((n,), self.c, device=dev)
        lo = torch.zeros(n, device=dev)
        hi = torch.full((n,), math.inf, device=dev)
        best = _Best(x, batch.num_classes)
        evals = torch.zeros(n, dtype=torch.long, device=dev)
        for _ in range(self.search_steps):
            succeeded = self._optimise(batch, c, best, evals)
            # binary search on c, per image
            lo = torch.where(succeeded, lo, torch.maximum(lo, c))
            hi = torch.where(succeeded, torch.minimum(hi, c), hi)
            c = torch.where(torch.isfinite(hi), (lo + hi) / 2, c * 10)
        found = torch.isfinite(best.l2)
        return Outcome(best.x, evals, success=found, logits=torch.where(found[:, None], best.z, batch.logits))

    def _optimise(self, batch: Batch, c: torch.Tensor, best: _Best, evals: torch.Tensor) -> torch.Tensor:
        """Adam for every image at its c; keeps each image's smallest successful L2 in
        ``best``; returns which images succeeded at some step."""
        x, goal, n, dev = batch.x, batch.goal, len(batch), batch.device
        tanh = self.box == "tanh"
        # the variable Adam moves: the pixels, or w with x' = (tanh(w) + 1) / 2
        v = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6)) if tanh else x.clone()
        adam = _Adam(v)
        prev = torch.full((n,), math.inf, device=dev)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        succeeded = torch.zeros(n, dtype=torch.bool, device=dev)
        check_every = max(1, self.steps // 10)
        for it in range(self.steps):
            first = batch.take_first()  # the first search step's first step, at x' = x: the clean pass
            if first is not None:
                with torch.enable_grad():  # (the L2 term and its gradient are 0 there)
                    z = first.logits()
                    loss = c * margin(z, goal, batch.targeted).clamp_min(-self.kappa)
                    g = first.grad(loss.sum())
                xa, l2sq = x, torch.zeros(n, device=dev)
            else:
                v.requires_grad_(True)
                with torch.enable_grad():
                    xa = (torch.tanh(v) + 1) / 2 if tanh else v
                    z = batch.forward(xa)
                    m = margin(z, goal, batch.targeted)
                    l2sq = (xa - x).flatten(1).pow(2).sum(1)
                    loss = l2sq + c * m.clamp_min(-self.kappa)
                    (g,) = torch.autograd.grad(loss.sum(), v)
            v, xa, z, loss = v.detach(), xa.detach(), z.detach(), loss.detach()
            evals += active
            ok = self.adversarial(z, goal, batch.targeted) & active
            best.update(xa, z, l2sq.detach().sqrt(), ok)
            succeeded |= ok
            if not active.all():
                g[~active] = 0
            if tanh:
                v = adam.step(v, g, self.lr)
            else:  # a pixel step of lr / 2 (dx'/dw at mid-grey), annealed to 0 over the steps
                v = adam.step(v, g, self.lr / 2 * (1 + math.cos(math.pi * it / self.steps)) / 2).clamp_(0, 1)
            if self.abort_early and (it + 1) % check_every == 0:
                active &= ~(loss > 0.9999 * prev)
                prev = loss
                if not active.any():
                    break
        return succeeded


class _Best:
    """Each image's smallest-L2 successful point so far, with its logits."""

    def __init__(self, x: torch.Tensor, k: int) -> None:
        self.x = x.clone()
        self.z = torch.zeros(x.shape[0], k, device=x.device)
        self.l2 = torch.full((x.shape[0],), math.inf, device=x.device)

    def update(self, xa: torch.Tensor, z: torch.Tensor, l2: torch.Tensor, ok: torch.Tensor) -> None:
        better = ok & (l2 < self.l2)
        if better.any():
            self.l2 = torch.where(better, l2, self.l2)
            self.x[better] = xa[better]
            self.z[better] = z[better]


class _Adam:
    """Adam (Kingma & Ba) on one tensor, in place: the step every C&W implementation uses."""

    def __init__(self, v: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.b1, self.b2, self.eps, self.t = betas[0], betas[1], eps, 0
        self.m = torch.zeros_like(v)
        self.s = torch.zeros_like(v)

    def step(self, v: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
        self.t += 1
        self.m.mul_(self.b1).add_(g, alpha=1 - self.b1)
        self.s.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
        denom = (self.s / (1 - self.b2**self.t)).sqrt_().add_(self.eps)
        return v.addcdiv_(self.m, denom, value=-lr / (1 - self.b1**self.t))
