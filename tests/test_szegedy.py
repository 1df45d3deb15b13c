"""The batched Szegedy attack on a tiny model: independence, the box, the c search."""

import pytest
import torch
from torch import nn

from advex.attacks import Szegedy
from advex.errors import AdvexError
from advex.models import Classifier


def _fast(**kw):
    kw.setdefault("quantize", False)
    return Szegedy(**kw)


def _other(model, x, shift=1):
    """A target per image that differs from its current prediction."""
    return (model.predict(x)[0] + shift) % model(x[:1]).shape[1]


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_targeted_attack_succeeds_inside_the_box(tiny_model, tiny_images, method):
    x = tiny_images
    t = _other(tiny_model, x, 2)
    res = _fast(method=method)(tiny_model, x, target=t)
    xa = res.x_adv
    assert res.success.all()
    assert (xa >= 0).all() and (xa <= 1).all()
    assert (tiny_model.predict(xa)[0] == t).all()
    assert torch.allclose(res.l2, (xa - x).flatten(1).norm(dim=1), atol=1e-5)
    assert not torch.isnan(res.extra["c"]).any()


def test_each_image_is_independent_of_its_batch(tiny_model, tiny_images):
    atk = _fast(search_steps=4)
    t = _other(tiny_model, tiny_images)
    batch = atk(tiny_model, tiny_images, target=t)
    for i in (0, 3):
        alone = atk(tiny_model, tiny_images[i : i + 1], target=t[i : i + 1])
        assert torch.allclose(alone.x_adv[0], batch.x_adv[i], atol=1e-4)
        assert int(alone.grad_evals[0]) == int(batch.grad_evals[i])
    # images stop on their own: they do not all spend the same number of evaluations
    assert len(set(batch.grad_evals.tolist())) > 1


def test_box_is_respected_at_saturated_pixels(tiny_model):
    x = torch.zeros(2, 3, 8, 8)
    x[1] = 1.0
    res = _fast(search_steps=2)(tiny_model, x, target=_other(tiny_model, x))
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    assert res.success.all()


def _linear_problem(dual_norm):
    """A linear 2-class model, inputs away from the box, targets = the other class, and the
    exact minimum perturbation |z_a - z_b| / ||w_a - w_b||_* (the box is inactive)."""
    torch.manual_seed(0)
    m = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)), classes=["a", "b"])
    x = 0.45 + 0.1 * torch.rand(4, 3, 4, 4)
    label = m.predict(x)[0]
    target = 1 - label
    w = m.net[1].weight
    z = m(x).detach()
    margin = (z.gather(1, label[:, None]) - z.gather(1, target[:, None])).squeeze(1).abs()
    return m, x, target, margin / dual_norm(w[0] - w[1])


def test_c_search_finds_the_minimum_l2_perturbation():
    m, x, target, dist = _linear_problem(torch.linalg.vector_norm)
    res = _fast(search_steps=12)(m, x, target=target)
    assert res.success.all()
    assert (res.l2 >= dist - 1e-5).all()  # nothing can beat the true minimum
    assert (res.l2 <= dist * 1.15).all(), (res.l2, dist)
    # and no single fixed c does better than the search
    for c in (1.0, 10.0, 100.0, 1e3, 1e4):
        fixed = _fast(c=c)(m, x, target=target)
        assert (res.l2[fixed.success] <= fixed.l2[fixed.success] * 1.02).all()


def test_linf_search_finds_the_minimum_linf_perturbation():
    m, x, target, dist = _linear_problem(lambda v: v.abs().sum())
    res = _fast(norm="linf", search_steps=12)(m, x, target=target)
    assert res.success.all()
    assert (res.linf >= dist - 1e-5).all() and (res.linf <= dist * 1.1).all(), (res.linf, dist)


def test_larger_c_gives_smaller_perturbation(tiny_model, tiny_images):
    t = _other(tiny_model, tiny_images, 3)
    small = _fast(c=1e-2)(tiny_model, tiny_images, target=t)
    large = _fast(c=1e2)(tiny_model, tiny_images, target=t)
    both = small.success & large.success
    assert both.any()
    assert (large.l2[both] < small.l2[both]).all()


def test_untargeted_changes_the_label(tiny_model, tiny_images):
    res = _fast()(tiny_model, tiny_images)
    assert res.target is None and res.success.all()
    assert (res.label_adv != res.label).all()


def test_quantised_success_survives_8bit_rounding(tiny_model, tiny_images):
    t = _other(tiny_model, tiny_images)
    res = Szegedy()(tiny_model, tiny_images, target=t)
    xq = (res.x_adv * 255).round() / 255
    assert res.success.all()
    assert torch.allclose(xq, res.x_adv, atol=1e-6)
    assert (tiny_model.predict(xq)[0] == t).all()


def test_deterministic(tiny_model, tiny_images):
    t = _other(tiny_model, tiny_images)
    a = _fast(search_steps=3)(tiny_model, tiny_images, target=t)
    b = _fast(search_steps=3)(tiny_model, tiny_images, target=t)
    assert torch.equal(a.x_adv, b.x_adv)


def test_network_is_frozen_in_eval_mode_and_restored(tiny_images):
    modes = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)
            self.fc = nn.Linear(3 * 8 * 8, 4)

        def forward(self, x):
            modes.append(self.training)
            return self.fc(self.bn(x).flatten(1))

    net = Spy().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = _fast(search_steps=2)(net, tiny_images)  # a plain nn.Module is accepted; untargeted
    assert res.success.any()
    assert modes and not any(modes)
    assert net.training and all(p.requires_grad for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_mixed_size_list_input(tiny_images):
    clf = Classifier(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)),
        input_size=(8, 8),
    )
    torch.manual_seed(0)
    ims = [torch.rand(3, 12, 16), torch.rand(3, 8, 8), torch.rand(3, 20, 10)]
    preds = [int(clf.predict(i[None])[0]) for i in ims]
    targets = [(p + 1) % 3 for p in preds]
    res = _fast(search_steps=3)(clf, ims, target=torch.tensor(targets))
    assert isinstance(res.x_adv, list)
    assert [tuple(a.shape) for a in res.x_adv] == [tuple(i.shape) for i in ims]
    for a, t in zip(res.x_adv, targets):
        assert int(clf.predict(a[None])[0]) == t


def test_bad_arguments(tiny_model, tiny_images):
    with pytest.raises(AdvexError, match="unknown method"):
        Szegedy(method="sgd")
    with pytest.raises(AdvexError, match="unknown norm"):
        Szegedy(norm="l1")
    with pytest.raises(AdvexError, match="fix eps instead"):
        Szegedy(norm="linf", c=1.0)
    with pytest.raises(AdvexError, match="c must be > 0"):
        Szegedy(c=0)
    with pytest.raises(AdvexError, match=r"in \[0, 1\]"):
        Szegedy()(tiny_model, tiny_images * 300, target=1)
    label = tiny_model.predict(tiny_images[:1])[0]
    with pytest.raises(AdvexError, match="already classified as the target"):
        Szegedy()(tiny_model, tiny_images[:1], target=int(label))
    with pytest.raises(AdvexError, match="unknown class name 'sevn'.*'seven'"):
        Szegedy()(Classifier(tiny_model.net, classes=["six", "seven", "eight", "nine"]), tiny_images, target="sevn")
    with pytest.raises(AdvexError, match="targets for 6 images"):
        Szegedy()(tiny_model, tiny_images, target=[1, 2])
