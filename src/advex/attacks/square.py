"""The Square attack (Andriushchenko et al. 2020), L-inf: a score-based black-box attack
that uses the model only through its outputs.

Start from vertical stripes of +-eps; at each iteration change one random square window
(side s from the paper's schedule, p_init * 1/2 at 10, 50, 200, ... of 10,000 rescaled
to the budget) to a random +-eps per channel, and keep the change if the margin loss
(true logit minus the best other; for a target, best other minus target) goes down.
Batched: every unbroken image makes one query per iteration; broken ones stop.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from advex.attacks.base import AttackResult, Targets, as_classifier, frozen, perturbation_norms, resolve_targets
from advex.attacks.gradient import check_pixels
from advex.errors import AdvexError


def _p_at(p_init: float, it: int, n_queries: int) -> float:
    it = int(it / n_queries * 10000)
    for k, t in enumerate((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)):
        if it <= t:
            return p_init / 2**k
    return p_init / 512


class Square:
    """Square attack, L-inf, with a budget of ``queries`` model evaluations per image."""

    def __init__(
        self, *, eps: float, queries: int = 5000, p_init: float = 0.8, norm: str = "linf", seed: int = 0
    ) -> None:
        if norm != "linf":
            raise AdvexError("Square supports norm='linf' here (L2 is not implemented yet)")
        if not eps > 0:
            raise AdvexError(f"eps must be > 0, got {eps}")
        if queries < 1:
            raise AdvexError(f"queries must be >= 1, got {queries}")
        if not 0 < p_init <= 1:
            raise AdvexError(f"p_init must be in (0, 1], got {p_init}")
        self.eps, self.queries, self.p_init, self.seed = float(eps), queries, p_init, seed

    def __repr__(self) -> str:
        return f"Square(eps={self.eps:g}, queries={self.queries}, p_init={self.p_init})"

    @torch.no_grad()
    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, target: Targets = None
    ) -> AttackResult:
        start = time.perf_counter()
        check_pixels(x)
        clf = as_classifier(model)
        dev = clf.device
        x = x.detach().to(dev, torch.float32)
        n, c, h, w = x.shape
        with frozen(clf):
            z0 = clf(x).float()
            conf0, label0 = z0.softmax(-1).max(-1)
            ytrue = label0 if y is None else torch.as_tensor(y, device=dev, dtype=torch.long).flatten()
            t = resolve_targets(clf, target, n, dev)
            goal = t if t is not None else ytrue

            def margin(z, idx):
                zg = z.gather(1, goal[idx, None]).squeeze(1)
                other = z.scatter(1, goal[idx, None], float("-inf")).amax(1)
                return other - zg if t is not None else zg - other  # success when < 0

            gen = torch.Generator(dev).manual_seed(self.seed)
            queries = torch.zeros(n, dtype=torch.long, device=dev)
            all_idx = torch.arange(n, device=dev)
            loss = margin(z0, all_idx)
            best = x.clone()
            done = loss < 0
            # stripes
            todo = (~done).nonzero().flatten()
            signs = torch.randint(0, 2, (todo.numel(), c, 1, w), generator=gen, device=dev).float() * 2 - 1
            cand = (x[todo] + self.eps * signs).clamp(0, 1)
            lc = margin(clf(cand).float(), todo)
            queries[todo] += 1
            best[todo], loss[todo] = cand, lc
            done = loss < 0
            rows = torch.arange(h, device=dev)
            cols = torch.arange(w, device=dev)
            for it in range(1, self.queries):
                idx = (~done).nonzero().flatten()
                if idx.numel() == 0:
                    break
                m = idx.numel()
                s = max(1, min(h, w, round((_p_at(self.p_init, it, self.queries) * h * w) ** 0.5)))
                r0 = torch.randint(0, h - s + 1, (m,), generator=gen, device=dev)
                c0 = torch.randint(0, w - s + 1, (m,), generator=gen, device=dev)
                win = ((rows[None, :] >= r0[:, None]) & (rows[None, :] < r0[:, None] + s))[:, :, None] & (
                    (cols[None, :] >= c0[:, None]) & (cols[None, :] < c0[:, None] + s)
                )[:, None, :]
                vals = (torch.randint(0, 2, (m, c, 1, 1), generator=gen, device=dev).float() * 2 - 1) * self.eps
                xi = x[idx]
                delta = torch.where(win[:, None], vals, best[idx] - xi)
                cand = (xi + delta).clamp(0, 1)
                lc = margin(clf(cand).float(), idx)
                queries[idx] += 1
                better = lc < loss[idx]
                best[idx[better]], loss[idx[better]] = cand[better], lc[better]
                done[idx] = loss[idx] < 0
            za = clf(best).float()
        conf_a, label_a = za.softmax(-1).max(-1)
        success = margin(za, all_idx) < 0
        norms = perturbation_norms(best - x, torch.full((n,), x[0].numel(), device=dev))
        return AttackResult(
            x_adv=best,
            success=success.cpu(),
            label=label0.cpu(),
            confidence=conf0.cpu(),
            label_adv=label_a.cpu(),
            confidence_adv=conf_a.cpu(),
            target=t.cpu() if t is not None else None,
            l0=norms["l0"].cpu(),
            l2=norms["l2"].cpu(),
            linf=norms["linf"].cpu(),
            rms=norms["rms"].cpu(),
            grad_evals=torch.zeros(n, dtype=torch.long),
            time_s=time.perf_counter() - start,
            extra={"queries": queries.cpu()},
        )
