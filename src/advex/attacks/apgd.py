"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"), Algorithm 1, for L-inf and L2.

Step size starts at 2 eps and is halved at checkpoints w_j (p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)) when (1) the loss increased in fewer
than rho = 0.75 of the steps since the last checkpoint, or (2) the step size was not
reduced at the last checkpoint and the best loss has not improved since; on a halving the
iterate restarts from the best point found. The update has momentum alpha = 0.75. Losses:
cross-entropy (``"ce"``) or the difference of logits ratio (``"dlr"``), both targeted or
untargeted. Everything is per image and batched; with ``early_stop`` an image leaves the
batch once it is broken.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from advex.attacks.base import Attack, Batch, Outcome, warn_if_255
from advex.attacks.norms import NORMS, per_image
from advex.errors import AdvexError


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j at which APGD may halve its step size."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p[1:] if q < 1})


def dlr_loss(z: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image DLR loss to maximise (Croce & Hein 2020, eq. 4 and its targeted form)."""
    zs = z.sort(dim=1, descending=True).values
    zy = z.gather(1, y[:, None]).squeeze(1)
    if target is None:
        other = z.scatter(1, y[:, None], float("-inf")).amax(1)
        return -(zy - other) / (zs[:, 0] - zs[:, 2] + 1e-12)
    zt = z.gather(1, target[:, None]).squeeze(1)
    return -(zy - zt) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)


class APGD(Attack):
    """Auto-PGD. ``loss="ce"`` or ``"dlr"``; ``target`` at call time makes it targeted
    (for DLR-targeted, ``y`` is also needed: the true labels, default the prediction)."""

    def __init__(
        self,
        *,
        eps: float,
        norm: Literal["linf", "l2"] = "linf",
        steps: int = 100,
        loss: Literal["ce", "dlr"] = "ce",
        restarts: int = 1,
        rho: float = 0.75,
        alpha: float = 0.75,
        early_stop: bool = True,
        seed: int = 0,
    ) -> None:
        if norm not in ("linf", "l2"):
            raise AdvexError(f"APGD supports norm 'linf' or 'l2', got {norm!r}")
        if loss not in ("ce", "dlr"):
            raise AdvexError(f"unknown APGD loss {loss!r}; use 'ce' or 'dlr'")
        if not eps > 0:
            raise AdvexError(f"eps must be > 0, got {eps}")
        warn_if_255(eps, norm)
        if steps < 1 or restarts < 1:
            raise AdvexError("steps and restarts must be >= 1")
        self.eps, self.norm, self.steps, self.loss = float(eps), norm, steps, loss
        self.restarts, self.rho, self.alpha, self.early_stop, self.seed = restarts, rho, alpha, early_stop, seed

    def __repr__(self) -> str:
        return f"APGD(eps={self.eps:g}, norm={self.norm!r}, steps={self.steps}, loss={self.loss!r})"

    def check(self, batch: Batch) -> None:
        if batch.targeted and self.loss == "dlr" and batch.num_classes < 4:
            raise AdvexError("targeted DLR needs at least 4 classes")

    def _losses(self, batch: Batch, z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Per-image loss to maximise of logits ``z`` of the batch's ``rows``."""
        if self.loss == "dlr":
            return dlr_loss(z, batch.y[rows], batch.target[rows] if batch.targeted else None)
        if batch.targeted:
            return -F.cross_entropy(z, batch.target[rows], reduction="none")
        return F.cross_entropy(z, batch.y[rows], reduction="none")

    def run(self, batch: Batch) -> Outcome:
        x, n, dev = batch.x, len(batch), batch.device
        gen = torch.Generator(dev).manual_seed(self.seed)
        best_adv = x.clone()
        success = torch.zeros(n, dtype=torch.bool, device=dev)
        evals = torch.zeros(n, dtype=torch.long, device=dev)
        for _ in range(self.restarts):
            idx = (~success).nonzero().flatten()
            if idx.numel() == 0:
                break
            self._restart(batch, idx, gen, best_adv, success, evals)
        return Outcome(best_adv, evals)

    def _restart(self, batch, idx, gen, best_adv, success, evals) -> None:
        """One run of Algorithm 1 on the images ``idx``, from a random start; writes the
        successes (at their first successful iterate) and, for failures, the highest-loss
        point into ``best_adv``."""
        norm, dev = NORMS[self.norm], batch.device
        ckpts = checkpoints(self.steps)
        xi = batch.x[idx]
        e = torch.full((idx.numel(),), self.eps, device=dev)
        m = idx.numel()

        def project(v, a):
            return (xi[a] + norm.project(v - xi[a], e[a])).clamp(0, 1)

        every = torch.arange(m, device=dev)
        cur = project(xi + norm.random(xi.shape, e, gen, dev, xi.dtype), every)
        prev = cur.clone()
        eta = 2 * e.clone()
        best_loss = torch.full((m,), -math.inf, device=dev)
        best_pt = cur.clone()
        last_loss = torch.full((m,), -math.inf, device=dev)
        count = torch.zeros(m, device=dev)
        eta_at_ck, best_at_ck, last_ck = eta.clone(), best_loss.clone(), 0
        active = torch.ones(m, dtype=torch.bool, device=dev)
        for k in range(self.steps):
            a = active.nonzero().flatten()
            if a.numel() == 0:
                break
            xa = cur[a].requires_grad_(True)
            with torch.enable_grad():
                z = batch.forward(xa, idx[a])
                lv = self._losses(batch, z, idx[a])
                (g,) = torch.autograd.grad(lv.sum(), xa)
            evals[idx[a]] += 1
            lv = lv.detach()
            ok = batch.hit(z.detach(), idx[a])
            if ok.any():
                done = a[ok]
                best_adv[idx[done]] = cur[done]
                success[idx[done]] = True
                if self.early_stop:
                    active[done] = False
            count[a] += (lv > last_loss[a]).float()
            last_loss[a] = lv
            better = lv > best_loss[a]
            best_loss[a] = torch.where(better, lv, best_loss[a])
            best_pt[a[better]] = cur[a[better]]
            # the step (momentum after the first iteration)
            zstep = project(cur[a] + per_image(eta[a], cur) * norm.direction(g), a)
            if k == 0:
                nxt = zstep
            else:
                nxt = project(cur[a] + self.alpha * (zstep - cur[a]) + (1 - self.alpha) * (cur[a] - prev[a]), a)
            prev[a] = cur[a]
            cur[a] = nxt
            if (k + 1) in ckpts:
                cond1 = count < self.rho * (k + 1 - last_ck)
                cond2 = (eta == eta_at_ck) & (best_loss <= best_at_ck)
                halve = (cond1 | cond2) & active
                eta = torch.where(halve, eta / 2, eta)
                cur[halve] = best_pt[halve]
                prev[halve] = best_pt[halve]
                count.zero_()
                eta_at_ck, best_at_ck, last_ck = eta.clone(), best_loss.clone(), k + 1
        a = active.nonzero().flatten()
        if a.numel():
            ok = batch.hit(batch.forward(cur[a], idx[a]), idx[a])
            best_adv[idx[a[ok]]] = cur[a[ok]]
            success[idx[a[ok]]] = True
            fail = a[~ok & ~success[idx[a]]]
            best_adv[idx[fail]] = best_pt[fail]  # the highest-loss point of a failure
