"""Gradient attacks: PGD / BIM in the L-inf, L2 and L1 balls (Madry et al. 2018; Kurakin
et al. 2017), FGSM (Goodfellow et al. 2015) and momentum (MI-FGSM, Dong et al. 2018).

``pgd_loop`` is the one projected-gradient loop in advex: the `PGD` and `FGSM` attacks,
adversarial training (PGD, TRADES, fast FGSM), the per-epoch robust accuracy and the
attack beside every certificate all run it. A norm supplies its random start, steepest
direction and projection (`advex.attacks.norms`). Batched: every image has its own state,
and with ``done`` an image leaves the batch at the first iterate that succeeds (that
iterate is returned), so later steps cost nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from advex.attacks.base import Attack, Batch, FirstPass, Outcome, warn_if_255
from advex.attacks.norms import NORMS, per_image
from advex.errors import AdvexError


@dataclass
class LoopResult:
    """What `pgd_loop` returns: the final points, which images stopped early (``done``
    said they succeeded at that point), forward+backward passes spent per image, and the
    logits of the stopped images' points (rows of the others undefined; None if none stopped)."""

    x_adv: torch.Tensor
    stopped: torch.Tensor
    evals: torch.Tensor
    logits: torch.Tensor | None = None


def pgd_loop(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    eps: float | torch.Tensor,
    steps: int,
    step_size: float | torch.Tensor,
    norm: str = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    momentum: float = 0.0,
    done: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    bf16: bool = False,
    first: FirstPass | None = None,
) -> LoopResult:
    """Maximise ``loss(model(x + d), rows)`` over ``d`` in the ``norm`` ball of radius
    ``eps`` with ``x + d`` in [0, 1]: ``steps`` steepest-ascent steps of ``step_size`` from a
    uniform random start in the ball (``random_start``) or from ``x``.

    ``loss(z, rows)`` gets the logits of the images ``rows`` (indices into ``x``) still in
    the batch and returns a scalar to maximise (a sum over them). ``done(z, rows)``, if
    given, marks the images that already succeed at the current point: they leave with
    it. ``eps`` and ``step_size`` are numbers or per-image (N,) tensors. ``momentum`` is the
    decay of MI-FGSM's momentum of L1-normalised gradients. Only the input is
    differentiated: parameter gradients are never accumulated, and the model's mode is
    left as it is (training attacks a network in training mode). ``first``: a pass of ``x``
    itself with its graph (without a random start only), differentiated by the first step
    instead of a pass of its own.
    """
    if first is not None and random_start:
        raise AdvexError("pgd_loop: a kept pass of x (first=) serves only a loop without a random start")
    nrm = NORMS[norm]
    x = x.detach()
    n, dev = x.shape[0], x.device
    eps_all = torch.as_tensor(eps, dtype=x.dtype, device=dev).expand(n)
    step_all = float(step_size) if isinstance(step_size, (int, float)) else torch.as_tensor(step_size).to(x).expand(n)
    out = x.clone()
    stopped = torch.zeros(n, dtype=torch.bool, device=dev)
    evals = torch.zeros(n, dtype=torch.long, device=dev)
    rows = torch.arange(n, device=dev)
    # the images still running, kept compact: finished ones are dropped once, so a step
    # indexes nothing while no image finishes
    xi, ei, si = x, eps_all, step_all
    if random_start:
        d = nrm.random(x.shape, eps_all, generator, dev, x.dtype)
    else:
        d = torch.zeros_like(x)
    if norm == "linf":  # ball and box are one box: a single clamp per step
        e4 = per_image(eps_all, x)
        lo, hi = torch.maximum(-e4, -x), torch.minimum(e4, 1 - x)
    d = (x + d).clamp(0, 1) - x
    mom = torch.zeros_like(x) if momentum > 0 else None
    logits = None
    for _ in range(steps):
        if first is not None:  # the first step, at x itself: its pass is already made
            with torch.enable_grad():
                z = first.logits()
                g = first.grad(loss(z, rows))
            first = None
        else:
            d.requires_grad_(True)
            with torch.enable_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
                z = model(xi + d).float()
                (g,) = torch.autograd.grad(loss(z, rows), d)
        d = d.detach()
        evals[rows] += 1
        if done is not None:
            ok = done(z.detach(), rows)
            if ok.any():
                if logits is None:
                    logits = z.new_zeros(n, z.shape[1])
                logits[rows[ok]] = z.detach()[ok]
                out[rows[ok]] = xi[ok] + d[ok]
                stopped[rows[ok]] = True
                keep = ~ok
                xi, rows, d, g = xi[keep], rows[keep], d[keep], g[keep]
                ei = ei[keep]
                si = si if isinstance(si, float) else si[keep]
                mom = mom[keep] if mom is not None else None
                if norm == "linf":
                    lo, hi = lo[keep], hi[keep]
                if rows.numel() == 0:
                    break
        if mom is not None:
            l1 = per_image(g.flatten(1).abs().sum(1).clamp_min(1e-12), g)
            mom = momentum * mom + g / l1
            g = mom
        if norm == "linf":
            direction = g.sign() if mom is not None else g.sign_()  # g may be the momentum
            if isinstance(si, float):
                d = d.add_(direction, alpha=si).clamp_(lo, hi)  # in place
            else:
                d = d.add_(direction * per_image(si, d)).clamp_(lo, hi)
        else:
            step = si if isinstance(si, float) else per_image(si, d)
            d = nrm.project(d + step * nrm.direction(g), ei)
            d = (xi + d).clamp(0, 1) - xi
    if rows.numel():
        out[rows] = xi + d  # none of these stopped: the last iterate
    return LoopResult(out, stopped, evals, logits)


class PGD(Attack):
    """Projected gradient descent with random start and restarts.

    Args:
        eps: radius of the ball (pixels in [0, 1]: 8/255, not 8).
        steps: iterations per restart.
        step_size: default 2.5 * eps / steps (Madry et al.'s rule of thumb).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        restarts: runs from fresh random starts for the images still unbroken.
        random_start: start uniformly inside the ball (False: from x itself, i.e. BIM).
        momentum: decay of the MI-FGSM momentum of L1-normalised gradients (0: none).
        early_stop: stop each image at its first successful iterate.
        seed: seeds the random starts; same seed, same result on the same device.
        bf16: opt-in fast path: the attack's forward and backward passes run under bfloat16
            autocast (the iterate, the projection and the final success check stay fp32).
            Meant for GPUs with bf16 tensor cores; on most CPUs it is slower.
    """

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 10,
        step_size: float | None = None,
        norm: Literal["linf", "l2", "l1"] = "linf",
        restarts: int = 1,
        random_start: bool = True,
        momentum: float = 0.0,
        early_stop: bool = True,
        seed: int = 0,
        bf16: bool = False,
    ) -> None:
        if norm not in NORMS:
            raise AdvexError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
        if not eps > 0:
            raise AdvexError(f"eps must be > 0, got {eps}")
        warn_if_255(eps, norm)
        if steps < 1 or restarts < 1:
            raise AdvexError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
        if step_size is not None and not step_size > 0:
            raise AdvexError(f"step_size must be > 0, got {step_size}")
        if not 0 <= momentum <= 1:
            raise AdvexError(f"momentum must be in [0, 1], got {momentum}")
        self.eps = float(eps)
        self.steps = steps
        self.step_size = float(step_size) if step_size is not None else 2.5 * eps / steps
        self.norm = norm
        self.restarts = restarts
        self.random_start = random_start
        self.momentum = momentum
        self.early_stop = early_stop
        self.seed = seed
        self.bf16 = bf16

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eps={self.eps:g}, steps={self.steps}, step_size={self.step_size:g}, "
            f"norm={self.norm!r}, restarts={self.restarts})"
        )

    def starts_at_clean(self) -> bool:
        return not self.random_start  # BIM and FGSM: the first gradient is at x

    def run(self, batch: Batch) -> Outcome:
        x, goal, n, dev = batch.x, batch.goal, len(batch), batch.device
        gen = torch.Generator(dev).manual_seed(self.seed)
        best = x.clone()
        success = torch.zeros(n, dtype=torch.bool, device=dev)
        evals = torch.zeros(n, dtype=torch.long, device=dev)
        logits = batch.logits.clone()  # of ``best``: from the pass that stopped an image, else one more
        first = batch.take_first()  # the clean pass, for a first step at x (all images, first restart)
        sign = -1.0 if batch.targeted else 1.0  # targeted: descend the target's loss
        for _ in range(self.restarts):
            ids = (~success).nonzero().flatten()
            if ids.numel() == 0:
                break
            gi = goal[ids]
            run = pgd_loop(
                batch.model,
                x[ids],
                lambda z, rows, gi=gi: sign * F.cross_entropy(z, gi[rows], reduction="sum"),
                eps=self.eps,
                steps=self.steps,
                step_size=self.step_size,
                norm=self.norm,
                random_start=self.random_start,
                generator=gen,
                momentum=self.momentum,
                done=(lambda z, rows, ids=ids: batch.hit(z, ids[rows])) if self.early_stop else None,
                bf16=self.bf16,
                first=first if ids.numel() == n and not self.random_start else None,
            )
            first = None
            best[ids] = run.x_adv
            evals[ids] += run.evals
            stopped = ids[run.stopped]
            success[stopped] = True
            if stopped.numel():
                logits[stopped] = run.logits[run.stopped]
            left = ids[~run.stopped]
            if left.numel():  # their last iterate has not been predicted yet
                logits[left] = batch.forward(best[left], left)
                success[left[batch.hit(logits[left], left)]] = True
        return Outcome(best, evals, logits=logits)


class FGSM(PGD):
    """The fast gradient sign method (Goodfellow et al. 2015): one step of size eps from x.

    With ``norm="l2"`` or ``"l1"`` it is the fast gradient method in that norm."""

    def __init__(
        self, *, eps: float, norm: Literal["linf", "l2", "l1"] = "linf", random_start: bool = False, seed: int = 0
    ) -> None:
        super().__init__(
            eps=eps,
            steps=1,
            step_size=eps,
            norm=norm,
            restarts=1,
            random_start=random_start,
            early_stop=False,
            seed=seed,
        )
