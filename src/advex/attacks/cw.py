"""Carlini & Wagner (2017) L2 attack: minimise ||x' - x||^2 + c * f(x') with
x' = (tanh(w) + 1) / 2 (so the box needs no projection) and
f = max(max_{i != t} Z_i - Z_t, -kappa) (targeted) or max(Z_y - max_{i != y} Z_i, -kappa);
Adam on w, a per-image binary search over c, and early abort when the loss stops falling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advex.attacks.base import AttackResult, Targets, as_classifier, finish, frozen, setup
from advex.errors import AdvexError


class CW:
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

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, target: Targets = None
    ) -> AttackResult:
        clf = as_classifier(model)
        with frozen(clf):
            st = setup(clf, x, y, target)
            x, goal, targeted, z0 = st.x, st.goal, st.targeted, st.logits
            n, dev = x.shape[0], x.device

            def margin(z, g):  # f without the -kappa floor: success when < 0 (or <= -kappa)
                zg = z.gather(1, g[:, None]).squeeze(1)
                other = z.scatter(1, g[:, None], float("-inf")).amax(1)
                return other - zg if targeted else zg - other

            best_l2_all = torch.full((n,), math.inf, device=dev)
            best_adv_all = x.clone()
            evals_all = torch.zeros(n, dtype=torch.long, device=dev)
            m0 = margin(z0, goal)
            already = (m0 < 0) if self.kappa == 0 else (m0 <= -self.kappa)
            best_l2_all[already] = 0.0  # nothing to do: x itself is adversarial
            sub = (~already).nonzero().flatten()
            x, goal, n = x[sub], goal[sub], sub.numel()
            w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
            c = torch.full((n,), self.c, device=dev)
            lo = torch.zeros(n, device=dev)
            hi = torch.full((n,), math.inf, device=dev)
            best_l2 = torch.full((n,), math.inf, device=dev)
            best_adv = x.clone()
            evals = torch.zeros(n, dtype=torch.long, device=dev)
            for _ in range(self.search_steps if n else 0):
                w = w0.clone().requires_grad_(True)
                opt = torch.optim.Adam([w], lr=self.lr)
                prev = torch.full((n,), math.inf, device=dev)
                active = torch.ones(n, dtype=torch.bool, device=dev)
                succeeded = torch.zeros(n, dtype=torch.bool, device=dev)
                check_every = max(1, self.steps // 10)
                for it in range(self.steps):
                    with torch.enable_grad():
                        xa = (torch.tanh(w) + 1) / 2
                        z = clf(xa).float()
                        m = margin(z, goal)
                        l2sq = (xa - x).flatten(1).pow(2).sum(1)
                        loss = l2sq + c * m.clamp_min(-self.kappa)
                        opt.zero_grad()
                        (loss * active).sum().backward()
                    evals += active.long()
                    with torch.no_grad():
                        ok = (m < 0) if self.kappa == 0 else (m <= -self.kappa)
                        better = ok & (l2sq.sqrt() < best_l2) & active
                        best_l2 = torch.where(better, l2sq.sqrt(), best_l2)
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
                # binary search on c, per image
                lo = torch.where(succeeded, lo, torch.maximum(lo, c))
                hi = torch.where(succeeded, torch.minimum(hi, c), hi)
                c = torch.where(torch.isfinite(hi), (lo + hi) / 2, c * 10)
            best_l2_all[sub], best_adv_all[sub], evals_all[sub] = best_l2, best_adv, evals
            return finish(st, best_adv_all, evals_all, success=torch.isfinite(best_l2_all))
