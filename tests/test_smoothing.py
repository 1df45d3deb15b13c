"""Randomized smoothing (Cohen et al. 2019): the statistics against independent computations,
the radius against a classifier whose smoothed probabilities are known in closed form, the
certificates against fresh samples at random and SmoothAdv points inside the radius, the
SmoothAdv attack, noise training, and the bad inputs."""

import math

import pytest
import torch
from helpers import needs_data
from torch import nn

from advex.attacks import SmoothAdv, SoftSmooth
from advex.certify import ABSTAIN, Smooth, binomial_pvalue, clopper_pearson_lower
from advex.errors import AdvexError


# ------------------------------------------------------------------ the statistics, computed another way
def _tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in log space (no scipy)."""
    if p <= 0:
        return 0.0 if k > 0 else 1.0
    if p >= 1:
        return 1.0
    terms = [
        math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(p) + (n - j) * math.log1p(-p)
        for j in range(k, n + 1)
    ]
    top = max(terms)
    return math.exp(top) * sum(math.exp(t - top) for t in terms)


def _lower_by_bisection(k: int, n: int, alpha: float) -> float:
    """The Clopper-Pearson lower bound by its definition: the p at which P(X >= k) = alpha."""
    if k == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _tail(k, n, mid) < alpha else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (37, 100), (99, 100), (990, 1000),
                                 (1000, 1000), (5123, 10_000)])  # fmt: skip
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_equals_the_beta_quantile_found_from_its_definition(k, n, alpha):
    got = float(clopper_pearson_lower(torch.tensor([k]), n, alpha)[0])
    assert got == pytest.approx(_lower_by_bisection(k, n, alpha), abs=1e-9)
    if k == n:
        assert got == pytest.approx(alpha ** (1 / n), rel=1e-9)


@pytest.mark.parametrize("k,n", [(0, 0), (0, 5), (3, 5), (5, 10), (7, 10), (60, 100), (50, 100), (900, 1000)])
def test_the_binomial_test_equals_the_exact_two_sided_sum(k, n):
    pmf = [math.comb(n, j) * 0.5**n for j in range(n + 1)]
    exact = min(1.0, sum(p for p in pmf if p <= pmf[k] * (1 + 1e-9))) if n else 1.0
    assert float(binomial_pvalue(torch.tensor([k]), torch.tensor([n]))[0]) == pytest.approx(exact, abs=1e-12)


# ------------------------------------------------------------------ a classifier whose smoothing is known
class _Halfplane(nn.Module):
    """Class 1 where w.x + b > 0, else class 0: smoothed at sigma, p_1(x) = Phi((w.x + b) / (sigma |w|)),
    so the true certified radius is the distance to the line, |w.x + b| / |w|."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = torch.tensor(w), float(b)

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def test_on_a_halfplane_the_radius_exceeds_the_true_one_no_more_often_than_alpha():
    net = _Halfplane([3.0, -4.0], 0.5)
    x = torch.tensor([[[[0.3, 0.1]]]])  # w.x + b = 1.0, |w| = 5: 0.2 from the line
    true_radius = 0.2
    sigma, alpha, trials = 0.25, 0.1, 300
    smooth = Smooth(net, sigma, seed=0)
    over, radii = 0, []
    for seed in range(trials):
        c = smooth.certify(x, n0=50, n=500, alpha=alpha, seed=seed)
        assert int(c.label[0]) in (1, ABSTAIN)
        radii.append(float(c.radius[0]))
        over += radii[-1] > true_radius
    # failures ~ Binomial(300, <= 0.1): mean <= 30, 45 is 3 standard deviations above
    assert over <= 45, over
    # and the bound is not vacuous: close below the truth
    assert 0.12 < sum(radii) / trials < true_radius


def test_predict_abstains_where_the_top_two_are_even_and_answers_where_they_are_not():
    net = _Halfplane([1.0, 0.0], -0.5)  # the line x0 = 0.5
    smooth = Smooth(net, 0.25)
    on_line = torch.tensor([[[[0.5, 0.5]]]])
    far = torch.tensor([[[[1.0, 0.5]]]])
    p = smooth.predict(torch.cat([on_line, far]), n=2000, alpha=0.001, seed=1)
    assert p.label.tolist() == [ABSTAIN, 1]
    assert p.count1[1] + p.count2[1] == 2000


def test_same_seed_same_certificate_and_chunking_keeps_every_draw():
    net = _Halfplane([3.0, -4.0], 0.5)
    x = torch.rand(7, 1, 1, 2)
    a = Smooth(net, 0.5, batch_size=64).certify(x, n0=10, n=1000, seed=3)
    b = Smooth(net, 0.5, batch_size=64).certify(x, n0=10, n=1000, seed=3)
    assert torch.equal(a.radius, b.radius) and torch.equal(a.count, b.count)
    assert a.forward_passes == 7 * 1010
    counts = Smooth(net, 0.5, batch_size=5).counts(x, 333, generator=torch.Generator().manual_seed(0))
    assert counts.sum(1).tolist() == [333] * 7


# ------------------------------------------------------------------ a real network
@pytest.fixture(scope="module")
def mnist():
    from advex.data import load_dataset
    from advex.models import load

    x, y = load_dataset("mnist", "test").subset(40).floats()
    return load("mnist-small"), x, y


@needs_data
def test_points_inside_the_radius_keep_the_smoothed_prediction(mnist):
    model, x, y = mnist
    sigma = 0.25
    smooth = Smooth(model, sigma, seed=0)
    cert = smooth.certify(x, n0=100, n=2000, alpha=0.001)
    ok = (cert.label != ABSTAIN) & (cert.p_lower >= 0.6)
    assert ok.sum() >= 10, "too few confident certificates to test"
    idx = ok.nonzero().flatten()
    gen = torch.Generator().manual_seed(7)
    points, expect = [], []
    for i in idx.tolist():
        r = 0.5 * float(cert.radius[i])
        d = torch.randn(x[i].shape, generator=gen)
        points.append(x[i] + r * d / d.norm())  # a random point at half the radius (not clipped: g is defined there)
        adv = SmoothAdv(eps=r, sigma=sigma, steps=10, samples=8, seed=i)(model, x[i : i + 1], y[i : i + 1])
        points.append(adv.x_adv[0])
        expect += [int(cert.label[i])] * 2
    counts = smooth.counts(torch.stack(points), 4000, generator=torch.Generator().manual_seed(11))
    top = counts.argmax(1)
    assert top.tolist() == expect
    assert (counts.max(1).values > 2000).all()


@needs_data
def test_smoothadv_beats_random_noise_of_the_same_norm(mnist):
    model, x, y = mnist
    eps, sigma = 1.5, 0.25
    adv = SmoothAdv(eps=eps, sigma=sigma, steps=10, samples=8, seed=0)(model, x, y)
    assert (adv.l2 <= eps + 1e-3).all()
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    x_rand = (x + eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    soft = SoftSmooth(model, sigma, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p_adv = soft(adv.x_adv).exp().gather(1, y[:, None]).mean()
        p_rand = soft(x_rand).exp().gather(1, y[:, None]).mean()
    assert p_adv < p_rand - 0.2, (float(p_adv), float(p_rand))


@needs_data
def test_noise_training_makes_the_base_classifier_accurate_under_noise(tmp_path):
    from advex.defences import TrainConfig, train

    common = dict(dataset="mnist", train_n=20000, epochs=2, eval_n=100, batch_size=128)
    plain = train(TrainConfig(**common), tmp_path / "plain", progress=False, verbose=False)
    noisy = train(TrainConfig(**common, defence="gaussian", sigma=0.5), tmp_path / "noisy", progress=False,
                  verbose=False)  # fmt: skip
    adv = train(TrainConfig(**common, defence="smoothadv", sigma=0.5, eps=0.5, attack_steps=1, noise_samples=2),
                tmp_path / "smoothadv", progress=False, verbose=False)  # fmt: skip
    from advex.evaluation import count_noisy

    test = __import__("advex.data", fromlist=["load_dataset"]).load_dataset("mnist", "test").subset(1000)
    acc = {k: count_noisy(r.model.eval(), test, 0.5) / 1000 for k, r in [("plain", plain), ("noisy", noisy),
                                                                      ("smoothadv", adv)]}  # fmt: skip
    assert acc["noisy"] > acc["plain"] + 0.1, acc
    assert acc["smoothadv"] > acc["plain"] + 0.1, acc
    assert noisy.card["noise_acc"] is not None and noisy.card["sigma"] == 0.5
    assert noisy.history[-1]["robust_acc"] is None


# ------------------------------------------------------------------ bad input
def test_bad_settings_are_one_clear_error():
    net = _Halfplane([1.0, 0.0], 0.0)
    x = torch.rand(2, 1, 1, 2)
    for sigma in (0, -0.1, float("nan"), float("inf"), True):
        with pytest.raises(AdvexError, match="sigma must be a finite number > 0"):
            Smooth(net, sigma)
    s = Smooth(net, 0.25)
    with pytest.raises(AdvexError, match="n0 must be a whole number >= 1"):
        s.certify(x, n0=0, n=10)
    with pytest.raises(AdvexError, match=r"n \(5\) must be at least n0 \(10\)"):
        s.certify(x, n0=10, n=5)
    for alpha in (0, 1, 1.5, -0.1):
        with pytest.raises(AdvexError, match=r"alpha must be in \(0, 1\)"):
            s.certify(x, alpha=alpha, n0=10, n=10)
        with pytest.raises(AdvexError, match=r"alpha must be in \(0, 1\)"):
            s.predict(x, alpha=alpha, n=10)
    with pytest.raises(AdvexError, match="non-empty"):
        s.certify(torch.rand(2, 2), n0=10, n=10)
    with pytest.raises(AdvexError, match="pixels must be in"):
        s.certify(x + 2, n0=10, n=10)
    bn = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(2), nn.Linear(2, 2)).train()
    with pytest.raises(AdvexError, match="training mode"):
        Smooth(bn, 0.25).certify(x, n0=10, n=10)
    with pytest.raises(AdvexError, match="sigma must be"):
        SmoothAdv(eps=0.5, sigma=0)
    with pytest.raises(AdvexError, match="eps .* must be a finite number > 0"):
        SmoothAdv(eps=0, sigma=0.5)
