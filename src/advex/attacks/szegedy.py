"""The box-constrained optimisation attack of Szegedy et al. (2013), "Intriguing
properties of neural networks", section 4.1:

    minimise  c * |r|  +  loss_f(x + r, l)   subject to  x + r in [0, 1]^m

solved here for a whole batch at once, every image with its own c. With ``norm="l2"``
the penalty is ``c * mean(r**2)`` (the square of the paper's distortion measure
sqrt(mean(r^2)); squared so the objective is smooth at r = 0). The paper finds the
minimum perturbation by a line search over c; we do it per image: grow or shrink c by
``search_factor`` until success is bracketed, then bisect geometrically, keeping the
smallest successful r. With ``norm="linf"`` the box is tightened to the L-inf ball
``|r| <= eps`` and the search is over eps instead of c (the L-inf norm is not smooth,
but a ball is a box, which both solvers handle exactly).

Success is judged on the image quantised to 8 bits (``quantize=True``), the form in
which it is saved, so a reported success survives the round trip through a PNG.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from advex.attacks.base import Attack, Batch, Outcome, margin
from advex.attacks.norms import per_image
from advex.attacks.optim import adam_box, lbfgs_box
from advex.data import quantize as quantize_8bit
from advex.errors import AdvexError


class Szegedy(Attack):
    """Minimum-perturbation targeted (or untargeted) attack by box-constrained optimisation.

    Takes a (N, C, H, W) batch or a list of (C, H, W) photos of mixed sizes (each keeps its
    own resolution; ``x_adv`` is then a list too).

    Args:
        method: ``"lbfgs"`` (projected L-BFGS, the paper's choice) or ``"adam"`` (Adam
            with projection onto the box).
        norm: ``"l2"`` (penalty ``c * mean(r^2)``, search over c) or ``"linf"`` (ball
            ``|r| <= eps``, search over eps).
        c: fix the trade-off (l2) instead of searching; larger c, smaller r.
        eps: fix the L-inf radius (linf) instead of searching.
        c_init, eps_init: where the per-image search starts.
        search_steps: optimisations per image in the search (1 with ``c``/``eps`` fixed).
        search_factor: growth/shrink factor of c (or eps) before success is bracketed.
        max_iter: solver iterations per optimisation (default 30 for L-BFGS, 100 for Adam).
        lr: Adam step size (pixels in [0, 1]).
        confidence: required logit margin of the target over every other class (0: the
            target just has to be the top class).
        quantize: judge success on the 8-bit image (as saved to PNG).
        progress: show a progress bar over the search steps.
    """

    mixed_sizes = True

    def __init__(
        self,
        *,
        method: Literal["lbfgs", "adam"] = "lbfgs",
        norm: Literal["l2", "linf"] = "l2",
        c: float | None = None,
        eps: float | None = None,
        c_init: float = 100.0,
        eps_init: float = 4 / 255,
        search_steps: int = 7,
        search_factor: float = 10.0,
        max_iter: int | None = None,
        history: int = 8,
        lr: float = 1.0 / 255,
        confidence: float = 0.0,
        quantize: bool = True,
        progress: bool = False,
    ) -> None:
        if method not in ("lbfgs", "adam"):
            raise AdvexError(f"unknown method {method!r}; use 'lbfgs' or 'adam'")
        if norm not in ("l2", "linf"):
            raise AdvexError(f"unknown norm {norm!r}; use 'l2' or 'linf'")
        if c is not None and norm != "l2":
            raise AdvexError("c is the trade-off of the l2 attack; with norm='linf' fix eps instead")
        if eps is not None and norm != "linf":
            raise AdvexError("eps fixes the L-inf radius; with norm='l2' fix c instead")
        if c is not None and not c > 0:
            raise AdvexError(f"c must be > 0, got {c}")
        if eps is not None and not 0 < eps <= 1:
            raise AdvexError(f"eps must be in (0, 1], got {eps}")
        if search_steps < 1:
            raise AdvexError(f"search_steps must be >= 1, got {search_steps}")
        if search_factor <= 1:
            raise AdvexError(f"search_factor must be > 1, got {search_factor}")
        if max_iter is not None and max_iter < 1:
            raise AdvexError(f"max_iter must be >= 1, got {max_iter}")
        self.method = method
        self.norm = norm
        self.c = c
        self.eps = eps
        self.c_init = c_init
        self.eps_init = eps_init
        self.search_steps = 1 if (c is not None or eps is not None) else search_steps
        self.search_factor = search_factor
        self.max_iter = max_iter or (30 if method == "lbfgs" else 100)
        self.history = history
        self.lr = lr
        self.confidence = confidence
        self.quantize = quantize
        self.progress = progress

    def __repr__(self) -> str:
        fixed = f"c={self.c}" if self.c is not None else f"eps={self.eps}" if self.eps is not None else "search"
        return f"Szegedy(method={self.method!r}, norm={self.norm!r}, {fixed}, max_iter={self.max_iter})"

    def memory_bytes(self, n: int, height: int, width: int) -> int:
        """About how much memory the attack needs for ``n`` photos packed into one (n, 3,
        height, width) canvas: it works at full resolution, with its solver's state per pixel
        (L-BFGS: ``2 * history`` past steps and gradients), beside the model. Measured on the
        ImageNet default with fp32 on a CPU (0.2 GB + 560 bytes per pixel for L-BFGS with the
        default history of 8, 240 for Adam); see docs/benchmarks.md."""
        per_pixel = 368 + 24 * self.history if self.method == "lbfgs" else 240
        return int(0.2e9 + per_pixel * n * height * width)

    def check(self, batch: Batch) -> None:
        if batch.targeted:
            same = (batch.target == batch.logits.argmax(1)).nonzero().flatten().tolist()
            if same:
                i = same[0]
                raise AdvexError(
                    f"image {i} is already classified as the target {batch.model.class_name(int(batch.target[i]))!r}; "
                    "choose another target or run untargeted"
                )

    def adversarial(self, z: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
        """Success with a logit margin of at least ``confidence`` over every other class."""
        return -margin(z, goal, targeted) > self.confidence

    def run(self, batch: Batch) -> Outcome:
        x, goal, n, dev = batch.x, batch.goal, len(batch), batch.device
        numel = batch.numel
        linf = self.norm == "linf"
        # strength s: larger s, smaller perturbation (s = c for l2, s = 1/eps for linf)
        s0 = (1.0 / (self.eps or self.eps_init)) if linf else (self.c or self.c_init)
        s = torch.full((n,), float(s0), device=dev)
        lo = torch.zeros(n, device=dev)  # largest s known to succeed
        hi = torch.full((n,), math.inf, device=dev)  # smallest s known to fail
        best_adv = x.clone()
        best_dist = torch.full((n,), math.inf, device=dev)
        best_s = torch.full((n,), math.nan, device=dev)
        evals = torch.zeros(n, dtype=torch.long, device=dev)
        r = torch.zeros_like(x)
        valid = batch.valid
        box_lo, box_hi = (-x) * valid, (1 - x) * valid
        steps = range(self.search_steps)
        if self.progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"szegedy-{self.method}", unit="step")
        for _ in steps:
            todo = (hi / lo.clamp_min(1e-30) > 1.02) if self.search_steps > 1 else torch.ones_like(lo, dtype=torch.bool)
            idx = todo.nonzero().flatten()
            if idx.numel() == 0:
                break
            lower, upper = box_lo[idx], box_hi[idx]
            if linf:
                e = per_image(1.0 / s[idx], lower)
                lower, upper = torch.maximum(lower, -e), torch.minimum(upper, e)
            c_sub = torch.zeros(idx.numel(), device=dev) if linf else s[idx]

            def objective(rr: torch.Tensor, local: torch.Tensor, idx=idx, c_sub=c_sub):
                g_idx = idx[local]
                rr = rr.detach().requires_grad_(True)
                with torch.enable_grad():
                    z = batch.forward(x[g_idx] + rr, g_idx)
                    ce = F.cross_entropy(z, goal[g_idx], reduction="none")
                    loss = ce if batch.targeted else -ce
                    if not linf:
                        loss = loss + c_sub[local] * rr.pow(2).flatten(1).sum(1) / numel[g_idx]
                    (grad,) = torch.autograd.grad(loss.sum(), rr)
                return loss.detach(), grad

            r0 = r[idx].clamp(lower, upper)
            if self.method == "lbfgs":
                r_sub, stats = lbfgs_box(objective, r0, lower, upper, max_iter=self.max_iter, history=self.history)
            else:
                r_sub, stats = adam_box(objective, r0, lower, upper, max_iter=self.max_iter, lr=self.lr)
            evals[idx] += stats.evals
            r[idx] = r_sub
            xa = x[idx] + r_sub
            if self.quantize:
                xa = quantize_8bit(xa)
            ok = batch.hit(batch.forward(xa, idx), idx)
            d = (xa - x[idx]).flatten(1)
            dist = d.abs().amax(1) if linf else d.norm(dim=1)
            better = ok & (dist < best_dist[idx])
            bi = idx[better]
            best_adv[bi], best_dist[bi], best_s[bi] = xa[better], dist[better], s[idx][better]
            lo[idx] = torch.where(ok, torch.maximum(lo[idx], s[idx]), lo[idx])
            hi[idx] = torch.where(ok, hi[idx], torch.minimum(hi[idx], s[idx]))
            bracketed = (lo[idx] > 0) & torch.isfinite(hi[idx])
            s[idx] = torch.where(
                bracketed,
                (lo[idx] * hi[idx]).sqrt(),
                torch.where(ok, s[idx] * self.search_factor, s[idx] / self.search_factor),
            )
        nan = torch.full_like(best_s, math.nan)
        extra = {"c": nan if linf else best_s, "eps": (1.0 / best_s) if linf else nan}
        return Outcome(best_adv, evals, extra=extra)
