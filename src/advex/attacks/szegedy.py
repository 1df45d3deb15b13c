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
import time
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from advex.attacks.base import AttackResult, Targets, as_classifier, frozen, perturbation_norms, resolve_targets
from advex.attacks.optim import adam_box, lbfgs_box
from advex.data.images import pack, unpack
from advex.data.images import quantize as quantize_8bit
from advex.errors import AdvexError


class Szegedy:
    """Minimum-perturbation targeted (or untargeted) attack by box-constrained optimisation.

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

    # ------------------------------------------------------------------------------
    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor | list[torch.Tensor],
        y: torch.Tensor | None = None,
        target: Targets = None,
        sizes: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack ``x`` (N, C, H, W) in [0, 1], or a list of (C, H, W) images of mixed sizes.

        ``target``: a class (index or name) for all images, one per image, or ``None``
        for an untargeted attack away from ``y`` (default: the model's prediction).
        """
        start = time.perf_counter()
        clf = as_classifier(model)
        ragged = isinstance(x, (list, tuple))
        if ragged:
            if sizes is not None:
                raise AdvexError("give sizes only with a padded tensor, not with a list of images")
            x, sizes = pack([im.detach() for im in x])
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise AdvexError("x must be a (N, C, H, W) tensor or a list of (C, H, W) tensors")
        if x.numel() == 0:
            raise AdvexError("x is empty")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise AdvexError("pixels must be finite and in [0, 1]")
        dev = clf.device
        x = x.detach().to(dev, torch.float32)
        n = x.shape[0]
        if sizes is not None:
            sizes = sizes.to(torch.long).cpu()
            sz = sizes.to(dev)
            rows = torch.arange(x.shape[-2], device=dev)[None, :, None] < sz[:, 0, None, None]
            cols = torch.arange(x.shape[-1], device=dev)[None, None, :] < sz[:, 1, None, None]
            valid = (rows & cols)[:, None]
            numel = (sizes[:, 0] * sizes[:, 1] * x.shape[1]).to(dev)
        else:
            valid = torch.ones(n, 1, *x.shape[-2:], dtype=torch.bool, device=dev)
            numel = torch.full((n,), x[0].numel(), device=dev)

        with frozen(clf):
            return self._run(clf, x, y, target, sizes, valid, numel, ragged, start)

    def _run(self, clf, x, y, target, sizes, valid, numel, ragged, start) -> AttackResult:
        n, dev = x.shape[0], x.device

        def logits_of(xx: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return clf(xx, sizes[idx.cpu()] if sizes is not None else None)

        all_idx = torch.arange(n, device=dev)
        with torch.no_grad():
            logits0 = logits_of(x, all_idx).float()
        p0 = logits0.softmax(-1)
        conf0, label0 = p0.max(-1)
        t = resolve_targets(clf, target, n, dev)
        targeted = t is not None
        if targeted:
            same = (t == label0).nonzero().flatten().tolist()
            if same:
                i = same[0]
                raise AdvexError(
                    f"image {i} is already classified as the target {clf.class_name(int(t[i]))!r}; "
                    "choose another target or run untargeted"
                )
            goal = t
        else:
            goal = label0 if y is None else torch.as_tensor(y, device=dev, dtype=torch.long).flatten()
            if goal.numel() != n:
                raise AdvexError(f"got {goal.numel()} labels y for {n} images")

        def is_success(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            z = logits.float()
            zg = z.gather(1, goal[idx, None]).squeeze(1)
            others = z.scatter(1, goal[idx, None], float("-inf")).amax(1)
            if targeted:
                return zg - others > self.confidence
            return others - zg > self.confidence

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
                e = _bcast(1.0 / s[idx], lower)
                lower, upper = torch.maximum(lower, -e), torch.minimum(upper, e)
            c_sub = torch.zeros(idx.numel(), device=dev) if linf else s[idx]

            def objective(rr: torch.Tensor, local: torch.Tensor, idx=idx, c_sub=c_sub):
                g_idx = idx[local]
                rr = rr.detach().requires_grad_(True)
                with torch.enable_grad():
                    z = logits_of(x[g_idx] + rr, g_idx).float()
                    ce = F.cross_entropy(z, goal[g_idx], reduction="none")
                    loss = ce if targeted else -ce
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
            with torch.no_grad():
                xa = x[idx] + r_sub
                if self.quantize:
                    xa = quantize_8bit(xa)
                ok = is_success(logits_of(xa, idx), idx)
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

        with torch.no_grad():
            logits_adv = logits_of(best_adv, all_idx).float()
        pa = logits_adv.softmax(-1)
        conf_a, label_a = pa.max(-1)
        success = is_success(logits_adv, all_idx) & torch.isfinite(best_dist)
        norms = perturbation_norms(best_adv - x, numel)
        extra = {
            "c": best_s if not linf else torch.full_like(best_s, math.nan),
            "eps": (1.0 / best_s) if linf else torch.full_like(best_s, math.nan),
        }
        if targeted:
            extra["target_confidence"] = pa.gather(1, goal[:, None]).squeeze(1)
        x_adv = unpack(best_adv, sizes) if ragged else best_adv
        return AttackResult(
            x_adv=x_adv,
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
            grad_evals=evals.cpu(),
            time_s=time.perf_counter() - start,
            extra={k: v.cpu() for k, v in extra.items()},
        )


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))
