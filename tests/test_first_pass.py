"""The clean prediction taken from the first step's own pass (FGSM, BIM, DeepFool, C&W with its
pixel box): the same result as before, one network pass fewer, and where it is not used."""

import pytest
import torch
from helpers import needs_data

from advex.attacks import CW, FGSM, PGD, Attack, DeepFool

ATTACKS = {
    "fgsm": lambda: FGSM(eps=0.05),
    "bim": lambda: PGD(eps=0.05, steps=4, random_start=False, early_stop=False),
    "bim-early-stop": lambda: PGD(eps=0.2, steps=6, random_start=False),
    "cw": lambda: CW(c=1.0, steps=8),
    "cw-search": lambda: CW(c=1.0, steps=5, search_steps=3),
    "deepfool": lambda: DeepFool(steps=5),
}


def _counted(model):
    """model, and a list that grows by one per pass of its network."""
    calls = []
    hook = model.net.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    return calls, hook


def _run(attack, model, x, y, monkeypatch, reuse: bool):
    with monkeypatch.context() as m:
        if not reuse:
            m.setattr(Attack, "starts_at_clean", lambda self: False)
            m.setattr(type(attack), "starts_at_clean", lambda self: False)
        calls, hook = _counted(model)
        try:
            return attack(model, x, y), calls
        finally:
            hook.remove()


def _same(a, b):
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-6)
    assert torch.equal(a.success, b.success) and torch.equal(a.grad_evals, b.grad_evals)
    assert torch.allclose(a.confidence_adv, b.confidence_adv, atol=1e-5)
    assert torch.equal(a.label, b.label) and torch.allclose(a.confidence, b.confidence)


@pytest.mark.parametrize("name", ATTACKS)
def test_the_first_step_reuses_the_clean_pass_with_the_same_result(tiny_model, monkeypatch, name):
    atk = ATTACKS[name]()
    assert atk.starts_at_clean()
    x = 0.2 + 0.6 * torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = tiny_model(x).argmax(1).detach()
    y[0] = (y[0] + 1) % 4  # one image already adversarial: left out, the rest still reuse the pass
    fresh, fresh_calls = _run(atk, tiny_model, x, y, monkeypatch, reuse=False)
    kept, kept_calls = _run(atk, tiny_model, x, y, monkeypatch, reuse=True)
    _same(kept, fresh)
    assert kept.grad_evals.sum() > 0
    assert len(kept_calls) == len(fresh_calls) - 1  # the first step's pass is the clean prediction
    assert kept_calls[0] == 16 and fresh_calls[1] == 15  # ... over all 16, where a fresh one took the 15


@pytest.mark.parametrize("name", ["fgsm", "cw"])
def test_with_many_images_already_adversarial_the_first_step_makes_its_own_pass(tiny_model, monkeypatch, name):
    atk = ATTACKS[name]()
    x = 0.2 + 0.6 * torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = tiny_model(x).argmax(1).detach()
    y[:5] = (y[:5] + 1) % 4  # 7 of 12 left: under 2/3, a backward over all 12 would cost more
    fresh, fresh_calls = _run(atk, tiny_model, x, y, monkeypatch, reuse=False)
    kept, kept_calls = _run(atk, tiny_model, x, y, monkeypatch, reuse=True)
    _same(kept, fresh)
    assert kept_calls == fresh_calls and kept_calls[1] == 7


def test_a_fast_twin_takes_its_clean_prediction_from_the_fp32_reference(tiny_model, monkeypatch):
    twin = tiny_model.fast(precision="fp32")
    x = 0.2 + 0.6 * torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    fresh, fresh_calls = _run(FGSM(eps=0.05), twin, x, None, monkeypatch, reuse=False)
    kept, kept_calls = _run(FGSM(eps=0.05), twin, x, None, monkeypatch, reuse=True)
    _same(kept, fresh)
    assert kept_calls == fresh_calls  # the step's pass runs on the twin: nothing to share


def test_random_starts_and_the_tanh_box_do_not_start_at_the_clean_images():
    assert not PGD(eps=0.1).starts_at_clean() and not CW(box="tanh").starts_at_clean()
    from advex.attacks import APGD, Square

    assert not APGD(eps=0.1).starts_at_clean() and not Square(eps=0.1).starts_at_clean()


@needs_data
def test_fgsm_and_cw_on_mnist_small_give_what_a_pass_of_their_own_gives(mnist200, monkeypatch):
    from advex.models import load

    x, y = mnist200
    m = load("mnist-small")
    for atk in (FGSM(eps=0.15), CW(c=1.0, steps=20, lr=0.1)):
        fresh, fresh_calls = _run(atk, m, x, y, monkeypatch, reuse=False)
        kept, kept_calls = _run(atk, m, x, y, monkeypatch, reuse=True)
        assert len(kept_calls) == len(fresh_calls) - 1
        assert kept.success.float().mean() > 0.8  # a real attack on a real model
        assert torch.equal(kept.success, fresh.success)
        assert (kept.x_adv - fresh.x_adv).abs().max() < 1e-5
