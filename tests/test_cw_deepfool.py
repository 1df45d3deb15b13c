"""C&W L2 and DeepFool: exact minima on a linear model, success on a real one."""

from pathlib import Path

import pytest
import torch
from torch import nn

from advex.attacks import CW, DeepFool
from advex.errors import AdvexError
from advex.models import Classifier

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
needs_data = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/datasets not present")


def _linear():
    """A linear 2-class model, inputs in the middle of the box, and the exact minimum L2
    perturbation |z_a - z_b| / ||w_a - w_b|| (the box is inactive)."""
    torch.manual_seed(0)
    m = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)), classes=["a", "b"])
    x = 0.45 + 0.1 * torch.rand(6, 3, 4, 4)
    z = m(x).detach()
    w = m.net[1].weight
    return m, x, (z[:, 0] - z[:, 1]).abs() / (w[0] - w[1]).norm()


def test_deepfool_reaches_the_nearest_boundary_of_a_linear_model():
    m, x, dist = _linear()
    res = DeepFool(overshoot=0.02)(m, x)
    assert res.success.all()
    assert (res.l2 >= dist * 0.999).all() and (res.l2 <= dist * 1.03).all(), res.l2 / dist
    assert (res.grad_evals == 1).all()  # one linearisation is exact for a linear model


def test_cw_binary_search_approaches_the_minimum():
    m, x, dist = _linear()
    res = CW(c=0.1, steps=300, lr=0.01, search_steps=8)(m, x)
    assert res.success.all()
    assert (res.l2 >= dist * 0.999).all() and (res.l2 <= dist * 1.1).all(), res.l2 / dist


def test_cw_targeted_and_box(tiny_model):
    x = torch.rand(8, 3, 8, 8)
    target = (tiny_model.predict(x)[0] + 1) % 4
    res = CW(c=10, steps=100, lr=0.05)(tiny_model, x, target=target)
    assert res.success.float().mean() >= 0.9
    assert torch.equal(res.label_adv[res.success], target[res.success])
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()


@needs_data
def test_cw_moves_the_mnist_background_where_the_change_of_variables_cannot():
    """84% of an MNIST digit's pixels sit at exactly 0; in tanh space (w = -7.25) Adam's
    steps of 0.01 leave them there for hundreds of steps, so C&W at c = 1 with 100 steps
    breaks few digits. The clipped box moves them and breaks (nearly) all, with a smaller
    median L2 on the images both break; the adversarial predictions are fresh (the
    returned logits are those of exactly x_adv)."""
    from advex.data.datasets import load_dataset
    from advex.models import load

    model = load("mnist-small")
    x, y = load_dataset("mnist", "test").subset(40).floats()
    clip = CW(c=1.0, steps=100, lr=0.01)(model, x, y)
    tanh = CW(c=1.0, steps=100, lr=0.01, box="tanh")(model, x, y)
    correct = clip.label == y
    assert clip.success[correct].float().mean() >= 0.95
    assert tanh.success[correct].float().mean() <= 0.5
    bg = (x == 0) & clip.success[:, None, None, None]
    assert ((clip.x_adv - x).abs() > 1 / 255)[bg].float().mean() > 0.05  # the background moves
    assert ((tanh.x_adv - x).abs() > 1 / 255)[(x == 0)].sum() == 0  # ... and does not in tanh space
    both = clip.success & tanh.success & correct
    assert clip.l2[both].median() <= tanh.l2[both].median()
    with torch.no_grad():
        assert torch.equal(model(clip.x_adv).argmax(1), clip.label_adv)


@needs_data
def test_deepfool_breaks_every_mnist_digit_with_small_l2():
    from advex.data.datasets import load_dataset
    from advex.models import load

    x, y = load_dataset("mnist", "test").subset(100).floats()
    res = DeepFool()(load("mnist-small"), x, y)
    assert res.success[res.label == y].all()
    assert res.l2[res.success].median() < 2.0
    linf = DeepFool(norm="linf")(load("mnist-small"), x, y)
    assert linf.success[linf.label == y].all() and linf.linf.median() < 0.15


def test_bad_arguments(tiny_model):
    with pytest.raises(AdvexError, match="DeepFool is untargeted"):
        DeepFool()(tiny_model, torch.rand(2, 3, 8, 8), target=1)
    with pytest.raises(AdvexError, match="norm 'l2' or 'linf'"):
        DeepFool(norm="l1")
    with pytest.raises(AdvexError, match="c must be > 0"):
        CW(c=0)
    with pytest.raises(AdvexError, match="unknown box 'sigmoid'; use 'clip'"):
        CW(box="sigmoid")
    with pytest.raises(AdvexError, match="lr must be > 0"):
        CW(lr=0)
