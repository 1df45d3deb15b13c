"""Carlini & Wagner (2017) L2 attack: minimise ||x' - x||^2 + c * f(x') with
x' = (tanh(w) + 1) / 2 (so the box needs no projection) and
f = max(max_{i != t} Z_i - Z_t, -kappa) (targeted) or max(Z_y - max_{i != y} Z_i, -kappa);
Adam on w, a per-image binary search over c, and early abort when the loss stops falling.
"""

from __future__ import annotations

import math

import torch

from advex.attacks.base import Attack, Batch, Outcome, margin
from advex.errors import AdvexError


class CW(Attack):
    """C&W L2. ``c`` is the initial trade-off, refined per image by ``search_steps`` of
    binary search (1: keep ``c`` fixed); ``steps`` Adam iterations of ``lr`` per search step.
    ``abort_early`` stops an image whose loss fell by less than 0.01% over a tenth of the
    steps (C&W's rule, per image); off by default, as it can leave a slightly larger L2."""

    def __init__(
        self,
        *,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 100,
        lr: float = 0.01,
        search_steps: int = 1,
        abort_early: bool = False,
    ) -> None:
        if not c > 0:
            raise AdvexError(f"c must be > 0, got {c}")
        if steps < 1 or search_steps < 1:
            raise AdvexError("steps and search_steps must be >= 1")
        if kappa < 0:
            raise AdvexError(f"kappa must be >= 0, got {kappa}")
        self.c, self.kappa, self.steps, self.lr = float(c), float(kappa), steps, lr
        self.search_steps, self.abort_early = search_steps, abort_early

    def __repr__(self) -> str:
        return f"CW(c={self.c:g}, kappa={self.kappa:g}, steps={self.steps}, search_steps={self.search_steps})"

    def adversarial(self, z: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
        """Success with confidence kappa: f(x') = max(margin, -kappa) at its floor."""
        m = margin(z, goal, targeted)
        return (m < 0) if self.kappa == 0 else (m <= -self.kappa)

    def run(self, batch: Batch) -> Outcome:
        x, n, dev = batch.x, len(batch), batch.device
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        c = torch.full((n,), self.c, device=dev)
        lo = torch.zeros(n, device=dev)
        hi = torch.full((n,), math.inf, device=dev)
        best_l2 = torch.full((n,), math.inf, device=dev)
        best_adv = x.clone()
        evals = torch.zeros(n, dtype=torch.long, device=dev)
        for _ in range(self.search_steps):
            succeeded = self._optimise(batch, w0, c, best_l2, best_adv, evals)
            # binary search on c, per image
            lo = torch.where(succeeded, lo, torch.maximum(lo, c))
            hi = torch.where(succeeded, torch.minimum(hi, c), hi)
            c = torch.where(torch.isfinite(hi), (lo + hi) / 2, c * 10)
        return Outcome(best_adv, evals, success=torch.isfinite(best_l2))

    def _optimise(self, batch, w0, c, best_l2, best_adv, evals) -> torch.Tensor:
        """Adam on w for every image at its c; keeps each image's smallest successful L2 in
        ``best_l2``/``best_adv``; returns which images succeeded at some step."""
        x, goal, n, dev = batch.x, batch.goal, len(batch), batch.device
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        prev = torch.full((n,), math.inf, device=dev)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        succeeded = torch.zeros(n, dtype=torch.bool, device=dev)
        check_every = max(1, self.steps // 10)
        for it in range(self.steps):
            with torch.enable_grad():
                xa = (torch.tanh(w) + 1) / 2
                z = batch.forward(xa)
                m = margin(z, goal, batch.targeted)
                l2sq = (xa - x).flatten(1).pow(2).sum(1)
                loss = l2sq + c * m.clamp_min(-self.kappa)
                opt.zero_grad()
                (loss * active).sum().backward()
            evals += active.long()
            ok = (m < 0) if self.kappa == 0 else (m <= -self.kappa)
            better = ok & (l2sq.sqrt() < best_l2) & active
            best_l2.copy_(torch.where(better, l2sq.sqrt(), best_l2))
            best_adv[better] = xa[better].detach()
            succeeded |= ok & active
            w.grad[~active] = 0
            opt.step()
            if self.abort_early and (it + 1) % check_every == 0:
                stalled = loss.detach() > 0.9999 * prev
                active &= ~stalled
                prev = loss.detach()
                if not active.any():
                    break
        return succeeded
