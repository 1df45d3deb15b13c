"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019, "Certified adversarial robustness
via randomized smoothing"): certificates for any classifier, whatever its layers.

The smoothed classifier g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I), is
robust in L2: if the top class has probability p_A >= pA_lower > 1/2, g is constant within
radius R = sigma * PhiInv(pA_lower) (their Theorem 1, with p_B <= 1 - p_A). ``Smooth`` estimates
it by Monte Carlo: ``predict`` is their PREDICT (abstain unless a two-sided binomial test
tells the top two classes apart at level alpha), ``certify`` their CERTIFY (pick the class
with n0 draws, bound its probability from below with n fresh draws by the one-sided
Clopper-Pearson interval, abstain when the bound is <= 1/2). A radius holds with
probability at least 1 - alpha over the draws.

Everything is on the model's [0, 1] pixel scale (sigma and radii included): the noise is
added to the pixels, before the model's own normalisation. Batched over images and draws:
each forward pass holds ``batch_size`` noisy inputs (images x draws). Within a pass the draws
are shared by the images of the pass: every image's draws are i.i.d. N(0, sigma^2 I), so each
image's certificate is exactly Cohen et al.'s; only the images' estimates are correlated with
one another, which no per-image guarantee involves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from advex.attacks import SoftSmooth
from advex.errors import AdvexError
from advex.models import as_classifier, check_logits, check_pixels, frozen

ABSTAIN = -1


def clopper_pearson_lower(successes: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """One-sided (1 - alpha) lower confidence bound on a binomial probability from
    ``successes`` out of ``n`` draws (Clopper & Pearson 1934): the alpha quantile of
    Beta(k, n - k + 1), 0 for k = 0. What Cohen et al. compute as
    ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]``."""
    from scipy.stats import beta

    k = successes.detach().cpu().double().numpy()
    lower = beta.ppf(alpha, k, n - k + 1)
    return torch.from_numpy(lower).nan_to_num(0.0).clamp(0, 1)


def binomial_pvalue(k: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Two-sided p-value of ``k`` successes in ``n`` draws against p = 1/2 (the test of
    Cohen et al.'s PREDICT; scipy's ``binomtest(k, n, 0.5).pvalue``): 2 P(X >= max(k, n - k)),
    capped at 1 (1 for n = 0)."""
    import numpy as np
    from scipy.stats import binom

    k, n = k.detach().cpu().double().numpy(), n.detach().cpu().double().numpy()
    p = 2 * binom.sf(np.maximum(k, n - k) - 1, n, 0.5)
    return torch.from_numpy(np.where(n > 0, np.minimum(p, 1.0), 1.0))


@dataclass
class SmoothPrediction:
    """``predict``'s answer per image: the class (``ABSTAIN`` = -1 when the top two cannot be
    told apart), the counts of the top two classes among ``n`` draws, and the test's p-value."""

    label: torch.Tensor
    count1: torch.Tensor
    count2: torch.Tensor
    pvalue: torch.Tensor
    n: int
    alpha: float
    forward_passes: int
    time_s: float


@dataclass
class SmoothCertificate:
    """``certify``'s answer per image: the class (``ABSTAIN`` = -1 when its probability cannot
    be bounded above 1/2), the L2 radius within which the smoothed classifier provably keeps
    it (0 when abstaining; holds with probability >= 1 - alpha), the lower bound on its
    probability, and the counts behind it: the selected class's count among the ``n0`` selection
    draws and among the ``n`` estimation draws."""

    label: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor
    count_selection: torch.Tensor
    count: torch.Tensor
    sigma: float
    n0: int
    n: int
    alpha: float
    forward_passes: int
    time_s: float
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.label.numel())

    def certified(self, y: torch.Tensor, radius: float) -> torch.Tensor:
        """(N,) bool: the certified class is ``y`` and the certified radius is at least ``radius``."""
        return (self.label == y.cpu()) & (self.radius >= radius)

    def rows(self, y: torch.Tensor | None = None) -> list[dict]:
        out = []
        for i in range(len(self)):
            label = int(self.label[i])
            row = {
                "prediction": None if label == ABSTAIN else label,
                "abstain": label == ABSTAIN,
                "radius": round(float(self.radius[i]), 6),
                "p_lower": round(float(self.p_lower[i]), 6),
                "count_selection": int(self.count_selection[i]),
                "count": int(self.count[i]),
            }
            if y is not None:
                row["label"] = int(y[i])
                row["correct"] = label == int(y[i])
            out.append(row)
        return out


class Smooth:
    """The Gaussian-smoothed version of ``model`` (any ``nn.Module`` mapping [0, 1] pixels to
    logits, or a ``Classifier``) at noise level ``sigma`` (pixels in [0, 1]).

    ``batch_size``: noisy inputs per forward pass (default: as many as fit in about 64 MB of
    input, at most 1000 on a CPU and 4000 on a GPU); ``seed``: the noise's seed (the same seed
    and batch size give the same answers on the same device). Forward passes run in eval mode
    without gradients; a model left in training mode is refused (BatchNorm and dropout would
    make the base classifier random in another way than the one certified)."""

    def __init__(self, model: nn.Module, sigma: float, *, batch_size: int | None = None, seed: int = 0) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
            raise AdvexError(f"sigma must be a finite number > 0 (the noise's standard deviation, pixels in [0, 1]), "
                             f"got {sigma!r}")  # fmt: skip
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise AdvexError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.model = as_classifier(model)
        self.sigma, self.batch_size, self.seed = float(sigma), batch_size, seed

    def __repr__(self) -> str:
        return f"Smooth({self.model.name}, sigma={self.sigma:g})"

    # ------------------------------------------------------------------ the two procedures
    def predict(
        self, x: torch.Tensor, *, n: int = 100_000, alpha: float = 0.001, seed: int | None = None
    ) -> SmoothPrediction:
        """Cohen et al.'s PREDICT: the top class among ``n`` noisy copies, or ``ABSTAIN``
        unless the two-sided binomial test of the top two counts rejects "equally likely" at
        level ``alpha``. Returns the wrong class with probability at most alpha."""
        _check_counts(n=n)
        _check_alpha(alpha)
        t0 = time.perf_counter()
        x = self._inputs(x)
        gen = self._generator(seed)
        counts = self.counts(x, n, generator=gen)
        top = counts.topk(min(2, counts.shape[1]), dim=1)
        c1 = top.values[:, 0]
        c2 = top.values[:, 1] if counts.shape[1] > 1 else torch.zeros_like(c1)
        p = binomial_pvalue(c1, c1 + c2)
        label = torch.where(p <= alpha, top.indices[:, 0], torch.full_like(c1, ABSTAIN))
        return SmoothPrediction(label, c1, c2, p, n, alpha, n * len(x), time.perf_counter() - t0)

    def certify(
        self,
        x: torch.Tensor,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        seed: int | None = None,
        status: Callable[[str], None] | None = None,
    ) -> SmoothCertificate:
        """Cohen et al.'s CERTIFY for each image of ``x`` (N, C, H, W) in [0, 1]: the class
        most often predicted under ``n0`` draws, then from ``n`` fresh draws the one-sided
        Clopper-Pearson lower bound pA_lower of its probability; radius sigma * PhiInv(pA_lower),
        or ``ABSTAIN`` when pA_lower <= 1/2. ``status`` hears which stage runs."""
        _check_counts(n0=n0, n=n)
        _check_alpha(alpha)
        t0 = time.perf_counter()
        x = self._inputs(x)
        gen = self._generator(seed)
        if status is not None:
            status(f"smoothing sigma {self.sigma:g}: selection, {n0} draws")
        c0 = self.counts(x, n0, generator=gen)
        guess = c0.argmax(1)
        if status is not None:
            status(f"smoothing sigma {self.sigma:g}: estimation, {n} draws")
        c = self.counts(x, n, generator=gen)
        n_a = c.gather(1, guess[:, None]).squeeze(1)
        p_lower = clopper_pearson_lower(n_a, n, alpha).float()
        ok = p_lower > 0.5
        radius = torch.where(ok, self.sigma * _phi_inv(p_lower), torch.zeros_like(p_lower))
        label = torch.where(ok, guess, torch.full_like(guess, ABSTAIN))
        return SmoothCertificate(
            label=label, radius=radius, p_lower=p_lower, count_selection=c0.gather(1, guess[:, None]).squeeze(1),
            count=n_a, sigma=self.sigma, n0=n0, n=n, alpha=alpha, forward_passes=(n0 + n) * len(x),
            time_s=time.perf_counter() - t0,
        )  # fmt: skip

    def soft(self, samples: int, *, seed: int | None = None) -> SoftSmooth:
        """The soft smoothed classifier log E[softmax(f(x + delta))], estimated with ``samples``
        fresh draws per call: differentiable, for attacks (SmoothAdv)."""
        return SoftSmooth(self.model, self.sigma, samples, generator=self._generator(seed))

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def counts(self, x: torch.Tensor, n: int, *, generator: torch.Generator) -> torch.Tensor:
        """(N, K) int64: how often each class is the base model's top class over ``n`` noisy
        copies of each image. One forward pass holds up to ``batch_size`` noisy inputs: ``d``
        draws of noise (shared by the images of the pass) for each of ``g`` images, written into
        buffers allocated once. Where the model does not resize its input, the images are
        normalised once and the noise scaled by sigma / std, so a pass is one addition and the
        network: the same values as ``model(x + noise)``, without its two passes of normalisation."""
        clf, dev = self.model, x.device
        rows = self._rows(x)
        big, shape = x.shape[0], x.shape[1:]
        draws = max(1, min(n, rows // big))
        group = max(1, min(big, rows // draws))
        fused = not clf.resizes(*shape[-2:])
        base = clf.normalise(x) if fused else x
        scale = (self.sigma / clf.std.to(dev, x.dtype)).view(1, -1, 1, 1) if fused else self.sigma
        forward = clf.net if fused else clf
        noise_buf = torch.empty((draws, *shape), device=dev, dtype=x.dtype)
        input_buf = torch.empty((group, draws, *shape), device=dev, dtype=x.dtype)
        counts, k = None, None
        with frozen(clf):
            left = n
            while left > 0:
                d = min(draws, left)
                noise = torch.randn((d, *shape), generator=generator, device=dev, dtype=x.dtype, out=noise_buf[:d])
                noise.mul_(scale)
                for a in range(0, big, group):
                    xs = base[a : a + group]
                    inp = input_buf[: len(xs), :d]
                    torch.add(xs[:, None], noise[None], out=inp)
                    z = forward(inp.view(-1, *shape) if d == draws else inp.reshape(-1, *shape))
                    if k is None:
                        k = check_logits(z, len(xs) * d).shape[1]
                        counts = torch.zeros(big, k, dtype=torch.long, device=dev)
                    pred = z.argmax(1).view(len(xs), d) + k * torch.arange(a, a + len(xs), device=dev)[:, None]
                    ones = torch.ones(pred.numel(), dtype=torch.long, device=dev)
                    counts.view(-1).index_add_(0, pred.flatten(), ones)
                left -= d
        return counts.cpu()

    def _rows(self, x: torch.Tensor) -> int:
        if self.batch_size is not None:
            return self.batch_size
        cap = 4000 if x.device.type == "cuda" else 1000
        return max(1, min(cap, (64 << 20) // max(1, x[0].numel() * x.element_size())))

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] == 0:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AdvexError(f"x must be a non-empty (N, C, H, W) tensor of images in [0, 1], got {shape}")
        check_pixels(x)
        if any(
            m.training for m in self.model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))
        ):
            raise AdvexError("the model is in training mode (BatchNorm or dropout active); call model.eval() first: "
                             "smoothing certifies the eval-mode network")  # fmt: skip
        return x.detach().to(self.model.device, torch.float32)

    def _generator(self, seed: int | None) -> torch.Generator:
        return torch.Generator(self.model.device).manual_seed(self.seed if seed is None else seed)


def _phi_inv(p: torch.Tensor) -> torch.Tensor:
    """The standard normal quantile, in float64."""
    from scipy.stats import norm

    return torch.from_numpy(norm.ppf(p.double().numpy())).float()


def _check_counts(**counts: int) -> None:
    for name, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise AdvexError(f"{name} must be a whole number >= 1 (noise draws per image), got {v!r}")
    if "n0" in counts and counts["n"] < counts["n0"]:
        raise AdvexError(
            f"n ({counts['n']}) must be at least n0 ({counts['n0']}): n0 draws only choose the class, "
            "the n draws bound its probability (Cohen et al.: n0 = 100, n = 100,000)"
        )


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise AdvexError(f"alpha must be in (0, 1) (the chance a certificate is wrong, e.g. 0.001), got {alpha!r}")
