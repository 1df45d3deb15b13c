"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016), L2 and L-inf: step to the nearest
linearised decision boundary among the ``candidates`` most likely classes, repeat until the
label changes, then overshoot by ``overshoot``. Untargeted by construction."""

from __future__ import annotations

import torch

from advex.attacks.base import Attack, Batch, Outcome
from advex.errors import AdvexError


class DeepFool(Attack):
    targeted_ok = False

    def __init__(self, *, norm: str = "l2", steps: int = 50, candidates: int = 10, overshoot: float = 0.02) -> None:
        if norm not in ("l2", "linf"):
            raise AdvexError(f"DeepFool supports norm 'l2' or 'linf', got {norm!r}")
        if steps < 1 or candidates < 2:
            raise AdvexError("steps must be >= 1 and candidates >= 2")
        self.norm, self.steps, self.candidates, self.overshoot = norm, steps, candidates, overshoot

    def __repr__(self) -> str:
        return f"DeepFool(norm={self.norm!r}, steps={self.steps}, candidates={self.candidates})"

    def starts_at_clean(self) -> bool:
        return True  # the first linearisation is at x

    def run(self, batch: Batch) -> Outcome:
        x, ytrue, z0 = batch.x, batch.y, batch.logits
        n, dev = len(batch), batch.device
        k = min(self.candidates, z0.shape[1])
        cand = z0.scatter(1, ytrue[:, None], float("inf")).topk(k, dim=1).indices  # column 0 is ytrue
        r_tot = torch.zeros_like(x)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        evals = torch.zeros(n, dtype=torch.long, device=dev)
        logits = z0.clone()  # of the point each image is at, once a pass has seen it
        for _ in range(self.steps):
            a = active.nonzero().flatten()
            if a.numel() == 0:
                break
            first = batch.take_first()  # the first step, at x: the kept clean pass
            with torch.enable_grad():
                if first is not None:
                    z = first.logits()
                else:
                    xa = (x[a] + (1 + self.overshoot) * r_tot[a]).clamp(0, 1).requires_grad_(True)
                    z = batch.forward(xa, a)
                logits[a] = z.detach()
                still = z.argmax(1) == ytrue[a]
                active[a[~still]] = False  # crossed: a forward pass told us, no gradient needed
                if not still.any():
                    break
                zc = z.gather(1, cand[a])  # (m, k)
                grads = [
                    first.grad(zc[still, j].sum(), j < k - 1)
                    if first is not None
                    else torch.autograd.grad(zc[still, j].sum(), xa, retain_graph=j < k - 1)[0]
                    for j in range(k)
                ]
            evals[a[still]] += 1
            r_tot[a[still]] += self._step(torch.stack(grads, 1), zc.detach())[still].view(-1, *x.shape[1:])
        x_adv = (x + (1 + self.overshoot) * r_tot).clamp(0, 1)
        a = active.nonzero().flatten()
        if a.numel():  # out of steps: their last step has not been predicted yet
            logits[a] = batch.forward(x_adv[a], a)
        return Outcome(x_adv, evals, logits=logits)

    def _step(self, g: torch.Tensor, zc: torch.Tensor) -> torch.Tensor:
        """The step to the nearest linearised boundary among the candidates, per image, from
        the gradients ``g`` (m, k, C, H, W) and logits ``zc`` (m, k) of the candidate classes
        (column 0 the true class)."""
        w = (g[:, 1:] - g[:, :1]).flatten(2)
        f = zc[:, 1:] - zc[:, :1]
        dual = w.norm(dim=2) if self.norm == "l2" else w.abs().sum(2)
        dist = f.abs() / dual.clamp_min(1e-12)
        j = dist.argmin(1)
        rows = torch.arange(g.shape[0], device=g.device)
        wj, dj = w[rows, j], dist[rows, j]
        if self.norm == "l2":
            return (dj + 1e-4)[:, None] * wj / wj.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (dj + 1e-4)[:, None] * wj.sign()
