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
from torch import nn

from advex.attacks.base import AttackResult, Targets, as_classifier, finish, frozen, setup
from advex.attacks.norms import NORMS
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


class APGD:
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
        if steps < 1 or restarts < 1:
            raise AdvexError("steps and restarts must be >= 1")
        self.eps, self.norm, self.steps, self.loss = float(eps), norm, steps, loss
        self.restarts, self.rho, self.alpha, self.early_stop, self.seed = restarts, rho, alpha, early_stop, seed

    def __repr__(self) -> str:
        return f"APGD(eps={self.eps:g}, norm={self.norm!r}, steps={self.steps}, loss={self.loss!r})"

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, target: Targets = None
    ) -> AttackResult:
        clf = as_classifier(model)
        norm = NORMS[self.norm]
        with frozen(clf):
            st = setup(clf, x, y, target)
            x, ytrue, t, targeted, hit = st.x, st.y, st.target, st.targeted, st.hit
            n, dev = x.shape[0], x.device
            if targeted and self.loss == "dlr" and st.num_classes < 4:
                raise AdvexError("targeted DLR needs at least 4 classes")

            def losses(z, idx):
                if self.loss == "ce":
                    return (
                        -F.cross_entropy(z, t[idx], reduction="none")
                        if targeted
                        else F.cross_entropy(z, ytrue[idx], reduction="none")
                    )
                return dlr_loss(z, ytrue[idx], t[idx] if targeted else None)

            eps = torch.full((n,), self.eps, device=dev)
            gen = torch.Generator(dev).manual_seed(self.seed)
            best_adv = x.clone()
            success = (st.label == t) if targeted else (st.label != ytrue)
            evals = torch.zeros(n, dtype=torch.long, device=dev)
            ckpts = checkpoints(self.steps)

            def project(xi, v, e):
                return (xi + norm.project(v - xi, e)).clamp(0, 1)

            for _ in range(self.restarts):
                idx = (~success).nonzero().flatten()
                if idx.numel() == 0:
                    break
                xi, e = x[idx], eps[idx]
                m = idx.numel()
                cur = project(xi, xi + norm.random(xi.shape, e, gen, dev, xi.dtype), e)
                prev = cur.clone()
                eta = 2 * e.clone()
                best_loss = torch.full((m,), -math.inf, device=dev)
                best_pt = cur.clone()
                last_loss = torch.full((m,), -math.inf, device=dev)
                count = torch.zeros(m, device=dev)
                eta_at_ck = eta.clone()
                best_at_ck = best_loss.clone()
                last_ck = 0
                active = torch.ones(m, dtype=torch.bool, device=dev)
                for k in range(self.steps):
                    a = active.nonzero().flatten()
                    if a.numel() == 0:
                        break
                    xa = cur[a].requires_grad_(True)
                    with torch.enable_grad():
                        z = clf(xa).float()
                        lv = losses(z, idx[a])
                        (g,) = torch.autograd.grad(lv.sum(), xa)
                    evals[idx[a]] += 1
                    lv = lv.detach()
                    ok = hit(z.detach(), idx[a])
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
                    ea = eta[a].view(-1, 1, 1, 1)
                    zstep = project(xi[a], cur[a] + ea * norm.direction(g), e[a])
                    if k == 0:
                        nxt = zstep
                    else:
                        nxt = project(
                            xi[a], cur[a] + self.alpha * (zstep - cur[a]) + (1 - self.alpha) * (cur[a] - prev[a]), e[a]
                        )
                    prev[a] = cur[a]
                    cur[a] = nxt
                    if (k + 1) in ckpts:
                        span = k + 1 - last_ck
                        cond1 = count < self.rho * span
                        cond2 = (eta == eta_at_ck) & (best_loss <= best_at_ck)
                        halve = (cond1 | cond2) & active
                        eta = torch.where(halve, eta / 2, eta)
                        cur[halve] = best_pt[halve]
                        prev[halve] = best_pt[halve]
                        count.zero_()
                        eta_at_ck, best_at_ck, last_ck = eta.clone(), best_loss.clone(), k + 1
                a = active.nonzero().flatten()
                if a.numel():
                    with torch.no_grad():
                        ok = hit(clf(cur[a]).float(), idx[a])
                    best_adv[idx[a[ok]]] = cur[a[ok]]
                    success[idx[a[ok]]] = True
                    fail = a[~ok & ~success[idx[a]]]
                    best_adv[idx[fail]] = best_pt[fail]  # the highest-loss point of a failure
            return finish(st, best_adv, evals)
