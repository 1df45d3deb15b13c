"""FGSM / PGD in L-inf, L2 and L1: real models, norms and box, targets, restarts, bad input."""

import pytest
import torch
from helpers import needs_data, robust
from torch import nn

from advex.attacks import FGSM, PGD, AdvexWarning
from advex.attacks.norms import L1, NORMS
from advex.errors import AdvexError


@needs_data
def test_pgd_breaks_the_standard_model_but_not_the_adversarially_trained_one(mnist200):
    from advex.models import load

    x, y = mnist200
    atk = PGD(eps=0.3, steps=40, step_size=0.01)
    assert robust(atk(load("mnist-small"), x, y), y) <= 0.02
    assert robust(atk(load("mnist-small-pgd"), x, y), y) >= 0.8


@needs_data
def test_pgd_agrees_with_the_training_loop_robust_accuracy(mnist200):
    from advex.data.datasets import load_dataset
    from advex.evaluation import robust_accuracy
    from advex.models import load

    x, y = mnist200
    m = load("mnist-small-pgd")
    ours = robust(PGD(eps=0.3, steps=20)(m, x, y), y)
    helper = robust_accuracy(m, load_dataset("mnist", "test").subset(200), 0.3, 20)
    assert abs(ours - helper) <= 0.03  # same algorithm, other random starts


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5), ("l1", 3.0)])
def test_perturbations_stay_in_the_ball_and_the_box(tiny_model, norm, eps):
    x = torch.rand(16, 3, 8, 8)
    x[:4] = 0.0  # saturated pixels
    res = PGD(eps=eps, steps=15, norm=norm, early_stop=False)(tiny_model, x)
    d = res.x_adv - x
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    assert (NORMS[norm].norm(d) <= eps * (1 + 1e-4)).all()
    assert NORMS[norm].norm(d).max() > 0.5 * eps  # it did move


def test_l1_projection_is_the_euclidean_projection():
    torch.manual_seed(0)
    v = torch.randn(5, 40) * 3
    eps = torch.tensor([1.0, 2.0, 5.0, 200.0, 0.5])
    p = L1.project(v, eps)
    for i in range(5):
        if v[i].abs().sum() <= eps[i]:
            assert torch.equal(p[i], v[i])
            continue
        assert abs(float(p[i].abs().sum()) - float(eps[i])) < 1e-4
        lo, hi = 0.0, float(v[i].abs().max())  # soft threshold theta by bisection
        for _ in range(100):
            mid = (lo + hi) / 2
            if (v[i].abs() - mid).clamp_min(0).sum() > eps[i]:
                lo = mid
            else:
                hi = mid
        want = v[i].sign() * (v[i].abs() - hi).clamp_min(0)
        assert torch.allclose(p[i], want, atol=1e-4)


def test_targeted_with_names(tiny_model):
    x = torch.rand(8, 3, 8, 8)
    pred = tiny_model.predict(x)[0]
    target = (pred + 1) % 4
    res = PGD(eps=0.5, steps=30)(tiny_model, x, target=target)
    assert res.success.all() and torch.equal(res.label_adv, target)
    one = int(target[0])
    res = PGD(eps=0.5, steps=30)(tiny_model, x[pred != one], target=tiny_model.classes[one])
    assert (res.label_adv == one).all()


def test_early_stop_spends_fewer_evaluations_for_the_same_success(tiny_model):
    x = torch.rand(32, 3, 8, 8)
    fast = PGD(eps=0.2, steps=20, seed=1)(tiny_model, x)
    full = PGD(eps=0.2, steps=20, seed=1, early_stop=False)(tiny_model, x)
    assert fast.grad_evals.sum() < full.grad_evals.sum()
    assert fast.success.sum() >= full.success.sum() - 1
    assert (full.grad_evals == 20).all()


@needs_data
def test_restarts_rerun_only_unbroken_images(mnist200):
    from advex.models import load

    x, y = mnist200
    m = load("mnist-small-pgd")
    one = PGD(eps=0.3, steps=10, restarts=1)(m, x, y)
    three = PGD(eps=0.3, steps=10, restarts=3)(m, x, y)
    assert three.success.sum() >= one.success.sum()
    broken_first = one.success & (one.grad_evals < 10)
    assert (three.grad_evals[broken_first] == one.grad_evals[broken_first]).all()
    assert three.grad_evals.max() <= 30


def test_fgsm_is_one_full_step(tiny_model):
    x = 0.2 + 0.6 * torch.rand(8, 3, 8, 8)
    res = FGSM(eps=0.05)(tiny_model, x)
    assert (res.grad_evals == 1).all()
    assert torch.allclose(res.linf, torch.full((8,), 0.05), atol=1e-6)


def test_momentum_and_determinism(tiny_model):
    x = torch.rand(8, 3, 8, 8)
    a = PGD(eps=0.1, steps=5, momentum=1.0, seed=3)(tiny_model, x)
    b = PGD(eps=0.1, steps=5, momentum=1.0, seed=3)(tiny_model, x)
    c = PGD(eps=0.1, steps=5, momentum=1.0, seed=4)(tiny_model, x)
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)


def test_plain_module_is_accepted():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    res = PGD(eps=1.0, steps=20)(net, torch.rand(4, 3, 2, 2))
    assert res.success.all()


def test_bad_input(tiny_model):
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(AdvexError, match="contains NaN"):
        PGD(eps=0.1)(tiny_model, torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(AdvexError, match=r"in \[0, 1\].*divide by 255"):
        PGD(eps=0.1)(tiny_model, x * 255)
    with pytest.raises(AdvexError, match=r"shape \(N, 3, H, W\)"):
        PGD(eps=0.1)(tiny_model, torch.rand(2, 1, 8, 8))
    with pytest.raises(AdvexError, match=r"\(N, C, H, W\)"):
        PGD(eps=0.1)(tiny_model, torch.rand(3, 8, 8))
    with pytest.raises(AdvexError, match="eps must be > 0"):
        PGD(eps=-0.1)
    with pytest.raises(AdvexError, match="unknown norm 'l3'"):
        PGD(eps=0.1, norm="l3")
    with pytest.warns(AdvexWarning, match="did you mean 8/255"):
        PGD(eps=8)
    probs = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4), nn.Softmax(dim=1))
    with pytest.warns(AdvexWarning, match="seems to return probabilities"):
        PGD(eps=0.1, steps=2)(probs, x)


@needs_data
def test_bf16_fast_path_matches_fp32_success(mnist200):
    from advex.models import load

    x, y = mnist200
    m = load("mnist-small-pgd")
    fp32 = PGD(eps=0.3, steps=10)(m, x, y)
    bf16 = PGD(eps=0.3, steps=10, bf16=True)(m, x, y)
    assert abs(robust(fp32, y) - robust(bf16, y)) <= 0.03
    assert (bf16.linf <= 0.3 + 1e-6).all() and bf16.x_adv.dtype == torch.float32


def test_attacks_leave_a_plain_module_in_its_own_mode():
    """A plain eval-mode module wrapped by the attack comes back in eval mode (and vice versa),
    each submodule as it was."""
    from torch import nn

    from advex.attacks import PGD

    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.Dropout()).eval()
    net[2].train()  # one submodule in its own mode
    PGD(eps=0.1, steps=2)(net, torch.rand(2, 3, 2, 2))
    assert not net.training and not net[1].training and net[2].training


def _first_conv_layouts(model):
    """Records, for each pass, whether the network's first convolution read a channels-last input."""
    seen = []
    conv = next(m for m in model.net.modules() if isinstance(m, nn.Conv2d))
    hook = conv.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last) and not a[0].is_contiguous())
    )
    return seen, hook


def test_passes_run_channels_last_where_it_pays_with_the_same_result(imagenet_model, monkeypatch):
    from advex.data.images import sample_photos
    from advex.models import Classifier

    ims = [p.pixels for p in sample_photos()[:2]]
    x = torch.stack([torch.nn.functional.interpolate(im[None], size=(224, 224), mode="bilinear")[0] for im in ims])
    x = x.expand(-1, 3, -1, -1).clamp(0, 1).contiguous()
    atk = PGD(eps=0.5 / 255, steps=4, early_stop=False)
    assert imagenet_model.prefers_channels_last(x)  # CPU, 3 channels, dozens of convolutions
    seen, hook = _first_conv_layouts(imagenet_model)
    try:
        cl = atk(imagenet_model, x)
        assert seen and all(seen)  # the clean prediction, every step, the final prediction
        seen.clear()
        monkeypatch.setattr(Classifier, "prefers_channels_last", lambda self, x: False)
        plain = atk(imagenet_model, x)
        assert seen and not any(seen)
    finally:
        hook.remove()
    assert cl.x_adv.is_contiguous() and cl.x_adv.shape == x.shape
    assert torch.equal(cl.label, plain.label) and torch.equal(cl.success, plain.success)
    assert torch.allclose(cl.confidence, plain.confidence, atol=1e-4)
    # the same steps up to float rounding: a step's sign differs only where a gradient entry is
    # within rounding of 0 (2.6% of these photos' values, as between 1 and 2 threads)
    assert (cl.x_adv - plain.x_adv).abs().gt(1e-5).float().mean() < 0.1
    assert torch.allclose(cl.confidence_adv, plain.confidence_adv, atol=0.02)


def test_small_or_grey_networks_stay_contiguous_and_a_view_falls_back(tiny_model):
    from advex.models import Classifier

    x = torch.rand(4, 3, 8, 8)
    assert not tiny_model.prefers_channels_last(x)  # one convolution: it would not pay
    assert not Classifier(Viewing()).prefers_channels_last(torch.rand(4, 1, 8, 8))  # one channel

    # three convolutions, then a .view() that a channels-last activation cannot take
    net = Viewing(channels=3)
    with pytest.raises(RuntimeError, match="view"):
        net(x.contiguous(memory_format=torch.channels_last))
    model = Classifier(net)
    assert model.prefers_channels_last(x)
    seen, hook = _first_conv_layouts(model)
    res = PGD(eps=0.1, steps=3)(model, x)
    hook.remove()
    assert seen[0] and len(seen) > 1 and not any(seen[1:])  # tried once, then contiguous for the whole call
    assert res.linf.max() <= 0.1 + 1e-6 and res.grad_evals.min() >= 1
    assert not model.prefers_channels_last(x)  # remembered
    # and the classifier takes a channels-last batch from anyone: the same logits
    assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last)), net(x), atol=1e-6)


class Viewing(nn.Module):
    """Three convolutions, then a ``.view`` of the activations (which channels-last input breaks)."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.last = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = self.last(torch.relu(self.convs(x)))
        return self.fc(h.view(h.shape[0], -1))


def test_an_error_not_caused_by_the_layout_is_raised_as_it_is():
    from advex.models import Classifier

    class Broken(Viewing):
        def forward(self, x):
            raise RuntimeError("broken network")

    model = Classifier(Broken(channels=3))
    with pytest.raises(RuntimeError, match="broken network"):
        model(torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last))
    assert model.prefers_channels_last(torch.rand(2, 3, 8, 8))  # not blamed on the layout
