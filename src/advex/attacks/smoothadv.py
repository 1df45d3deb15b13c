"""SmoothAdv (Salman et al. 2019, "Provably robust deep learning via adversarially trained
smoothed classifiers"): the attack on a Gaussian-smoothed classifier.

The smoothed classifier g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I), has no
gradient; its soft version G(x)_c = E[softmax(f(x + delta))_c] does. SmoothAdv maximises the
cross-entropy -log G(x')_y over the L2 ball around x by PGD, each step estimating G by the
Monte Carlo mean of ``samples`` noisy copies (their Eq. 5 and Algorithm 1). ``SoftSmooth`` is
that estimate as a module, so the attack is `PGD` on it; training (``advex.defences``) and
the evaluation of a smoothed classifier under attack (``advex.certify.Smooth``) use the same.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advex.attacks.base import Attack
from advex.attacks.pgd import PGD
from advex.attacks.result import AttackResult
from advex.errors import AdvexError
from advex.models import as_classifier


class SoftSmooth(nn.Module):
    """log G(x): the log of the Monte Carlo mean of softmax(f(x + delta)) over ``samples``
    Gaussian draws of standard deviation ``sigma`` (pixels in [0, 1]), as (N, K) "logits"
    whose argmax is the soft smoothed prediction. Differentiable in x.

    Each call draws fresh noise from ``generator``; ``noise`` (N, samples, C, H, W), if
    given, is used instead on every call (the fixed draws of SmoothAdv training)."""

    def __init__(
        self,
        model: nn.Module,
        sigma: float,
        samples: int,
        *,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if not sigma > 0 or not math.isfinite(sigma):
            raise AdvexError(f"sigma must be a finite number > 0 (pixels in [0, 1]), got {sigma}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise AdvexError(f"samples must be a whole number >= 1, got {samples!r}")
        self.model, self.sigma, self.samples = model, float(sigma), samples
        self.generator, self.noise = generator, noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m = x.shape[0], self.samples
        if self.noise is not None:
            noise = self.noise[:n]
        else:
            noise = torch.randn((n, m, *x.shape[1:]), generator=self.generator, device=x.device, dtype=x.dtype)
            noise = noise * self.sigma
        z = self.model((x[:, None] + noise).flatten(0, 1)).float()
        logp = z.log_softmax(-1).view(n, m, -1)
        return torch.logsumexp(logp, dim=1) - math.log(m)


class SmoothAdv(Attack):
    """PGD in the L2 ball of radius ``eps`` on the soft smoothed classifier (``SoftSmooth``):
    ``steps`` steps of ``step_size`` (default 2 eps / steps, as Salman et al.), each with
    ``samples`` fresh noise draws per image, from x (no random start), every step kept to
    the end (a Monte Carlo success is no reason to stop). The result's labels and success
    are the soft classifier's, estimated with ``samples`` draws; the smoothed classifier's own
    verdict on ``x_adv`` needs many more (``advex.certify.Smooth.predict``)."""

    def __init__(
        self,
        *,
        eps: float,
        sigma: float,
        steps: int = 20,
        samples: int = 8,
        step_size: float | None = None,
        seed: int = 0,
    ) -> None:
        if not eps > 0 or not math.isfinite(eps):
            raise AdvexError(f"eps (an L2 radius) must be a finite number > 0, got {eps}")
        if not sigma > 0 or not math.isfinite(sigma):
            raise AdvexError(f"sigma must be a finite number > 0 (pixels in [0, 1]), got {sigma}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise AdvexError(f"steps must be a whole number >= 1, got {steps!r}")
        self.eps, self.sigma, self.steps, self.samples, self.seed = float(eps), float(sigma), steps, samples, seed
        self.step_size = float(step_size) if step_size is not None else 2 * self.eps / steps
        SoftSmooth(nn.Identity(), self.sigma, samples)  # checks samples

    def __repr__(self) -> str:
        return (
            f"SmoothAdv(eps={self.eps:g}, sigma={self.sigma:g}, steps={self.steps}, samples={self.samples}, "
            f"step_size={self.step_size:g})"
        )

    def __call__(self, model: nn.Module, x: torch.Tensor, y=None, *, target=None) -> AttackResult:
        clf = as_classifier(model)
        gen = torch.Generator(clf.device).manual_seed(self.seed)
        soft = SoftSmooth(clf, self.sigma, self.samples, generator=gen)
        pgd = PGD(eps=self.eps, norm="l2", steps=self.steps, step_size=self.step_size, random_start=False,
                  early_stop=False, seed=self.seed)  # fmt: skip
        return pgd(soft, x, y, target=target)
