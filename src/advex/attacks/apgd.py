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
        logits = batch.logits.clone()  # of best_adv, from the passes that chose it
        success = torch.zeros(n, dtype=torch.bool, device=dev)
        evals = torch.zeros(n, dtype=torch.long, device=dev)
        for _ in range(self.restarts):
            idx = (~success).nonzero().flatten()
            if idx.numel() == 0:
                break
            self._restart(batch, idx, gen, best_adv, logits, success, evals)
        return Outcome(best_adv, evals, logits=logits)

    def _restart(self, batch, idx, gen, best_adv, logits, success, evals) -> None:
        """One run of Algorithm 1 on the images ``idx``, from a random start; writes the
        successes (at their first successful iterate) and, for failures, the highest-loss
        point into ``best_adv``, with their logits into ``logits``.

        The state of the images still running is kept compact (row i is image ``rows[i]``):
        an image that finishes is dropped once, so no step indexes the whole state."""
        norm, dev = NORMS[self.norm], batch.device
        ckpts = checkpoints(self.steps)
        rows = idx
        xi = batch.x[idx]
        e = torch.full((idx.numel(),), self.eps, device=dev)
        if self.norm == "linf":  # ball and box are one box: a single clamp
            lo, hi = (xi - self.eps).clamp_(min=0), (xi + self.eps).clamp_(max=1)

            def project(v):
                return torch.maximum(torch.minimum(v, hi), lo)
        else:

            def project(v):
                return (xi + norm.project(v - xi, e)).clamp(0, 1)

        cur = project(xi + norm.random(xi.shape, e, gen, dev, xi.dtype))
        prev = cur
        eta = 2 * e
        best_loss = torch.full_like(e, -math.inf)
        best_pt, best_z = cur.clone(), None
        last_loss = torch.full_like(e, -math.inf)
        count = torch.zeros_like(e)
        eta_at_ck, best_at_ck, last_ck = eta.clone(), best_loss.clone(), 0
        for k in range(self.steps):
            xa = cur.requires_grad_(True)
            with torch.enable_grad():
                z = batch.forward(xa, rows)
                lv = self._losses(batch, z, rows)
                (g,) = torch.autograd.grad(lv.sum(), xa)
            cur, z, lv = cur.detach(), z.detach(), lv.detach()
            evals[rows] += 1
            if best_z is None:
                best_z = z.clone()
            ok = batch.hit(z, rows)
            if ok.any():
                best_adv[rows[ok]] = cur[ok]
                logits[rows[ok]] = z[ok]
                success[rows[ok]] = True
                if self.early_stop:
                    keep = ~ok
                    if not keep.any():
                        return
                    rows, xi, e, cur, prev, g, z, lv = (t[keep] for t in (rows, xi, e, cur, prev, g, z, lv))
                    eta, best_loss, best_pt, best_z, last_loss, count = (
                        t[keep] for t in (eta, best_loss, best_pt, best_z, last_loss, count)
                    )
                    eta_at_ck, best_at_ck = eta_at_ck[keep], best_at_ck[keep]
                    if self.norm == "linf":
                        lo, hi = lo[keep], hi[keep]
            count += lv > last_loss
            last_loss = lv
            better = lv > best_loss
            best_loss = torch.where(better, lv, best_loss)
            best_pt[better] = cur[better]
            best_z[better] = z[better]
            # the step (momentum after the first iteration)
            zstep = project(cur + per_image(eta, cur) * norm.direction(g))
            nxt = zstep if k == 0 else project(cur + self.alpha * (zstep - cur) + (1 - self.alpha) * (cur - prev))
            prev, cur = cur, nxt
            if (k + 1) in ckpts:
                cond1 = count < self.rho * (k + 1 - last_ck)
                cond2 = (eta == eta_at_ck) & (best_loss <= best_at_ck)
                halve = cond1 | cond2
                eta = torch.where(halve, eta / 2, eta)
                if halve.any():
                    cur, prev = cur.clone(), prev.clone()
                    cur[halve] = best_pt[halve]
                    prev[halve] = best_pt[halve]
                count.zero_()
                eta_at_ck, best_at_ck, last_ck = eta.clone(), best_loss.clone(), k + 1
        # the last iterate has not been predicted yet
        z = batch.forward(cur, rows)
        ok = batch.hit(z, rows)
        best_adv[rows[ok]] = cur[ok]
        logits[rows[ok]] = z[ok]
        success[rows[ok]] = True
        fail = ~ok & ~success[rows]  # never broken: the highest-loss point
        best_adv[rows[fail]] = best_pt[fail]
        logits[rows[fail]] = best_z[fail]
