"""The opt-in fast path (`Classifier.fast`): reduced precision, channels_last, torch.compile,
with every attack's clean and final predictions, and so its success, in fp32."""

import pytest
import torch

from advex.attacks import APGD, CW, FGSM, PGD, DeepFool, OnePixel, Square, Szegedy, evaluate_patch
from advex.errors import AdvexError


def test_a_fast_twin_shares_the_network_and_keeps_its_fp32_reference(tiny_model, tiny_images):
    twin = tiny_model.fast(precision="bf16", channels_last=True)
    assert twin.reference is tiny_model and tiny_model.reference is tiny_model
    assert twin.net is tiny_model.net and twin.fast(precision="fp16").reference is tiny_model
    assert list(tiny_model._modules) == ["net"]  # the original gains nothing
    with torch.no_grad():
        z32, z16 = tiny_model(tiny_images), twin(tiny_images)
    assert z16.dtype == torch.float32
    assert 0 < (z32 - z16).abs().max() < 0.1  # bf16 ran, and it is close
    with torch.no_grad():
        assert torch.equal(tiny_model.fast(precision="fp32")(tiny_images), z32)
    assert "fast(precision='bf16', channels_last=True" in repr(twin)


@pytest.mark.parametrize(
    "attack",
    [
        PGD(eps=0.1, steps=5),
        PGD(eps=0.5, norm="l2", steps=5, early_stop=False),
        FGSM(eps=0.1),
        APGD(eps=0.1, steps=5),
        CW(c=10, steps=20, lr=0.05),
        DeepFool(),
        Szegedy(c=0.1),
        OnePixel(pixels=2, population=30, iterations=5),
    ],
    ids=repr,
)
def test_attacks_on_a_bf16_twin_report_fp32_predictions_and_success(attack, tiny_model, tiny_images):
    twin = tiny_model.fast(precision="bf16")
    res = attack(twin, tiny_images)
    with torch.no_grad():
        clean = tiny_model(tiny_images).argmax(1)
        fresh = tiny_model(res.x_adv).argmax(1)
    assert torch.equal(res.label, clean) and torch.equal(res.label_adv, fresh)
    assert torch.equal(res.success, fresh != clean)  # success re-checked in fp32
    assert res.success.any()


@pytest.mark.parametrize(
    "attack",
    [
        PGD(eps=0.01, steps=4),
        PGD(eps=0.01, steps=4, restarts=3),
        PGD(eps=0.01, steps=4, early_stop=False),
        APGD(eps=0.01, steps=6),
        APGD(eps=0.01, steps=6, restarts=2, early_stop=False),
        CW(steps=5),
        DeepFool(steps=1),
        DeepFool(steps=5),
        Square(eps=0.02, queries=40),
        Square(eps=0.2, norm="l2", queries=40),
    ],
    ids=repr,
)
def test_predictions_an_attack_reuses_from_its_own_passes_are_those_of_x_adv(attack, tiny_model, tiny_images):
    """Attacks return the logits of the points they return from the pass that chose them
    (no extra forward pass); they must be exactly a fresh prediction's."""
    res = attack(tiny_model, tiny_images)
    with torch.no_grad():
        p = tiny_model(res.x_adv).softmax(-1)
    conf, label = p.max(-1)
    assert torch.equal(res.label_adv, label)
    assert torch.allclose(res.confidence_adv, conf, atol=1e-6)
    assert torch.equal(res.success, label != res.label)
    if not isinstance(attack, DeepFool):  # (it breaks all six; steps=1 ends with a final pass)
        assert 0 < res.success.sum() < len(res.success)  # both kinds of image are covered


def test_compiled_twin_gives_the_same_attack(tiny_model, tiny_images):
    pytest.importorskip("torch._inductor")
    twin = tiny_model.fast(precision="fp32", compile=True)
    a = PGD(eps=0.1, steps=3, early_stop=False)(tiny_model, tiny_images)
    b = PGD(eps=0.1, steps=3, early_stop=False)(twin, tiny_images)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-5)
    assert torch.equal(a.success, b.success)


def test_a_patch_is_judged_in_fp32_whatever_model_it_is_given(tiny_model, tiny_images):
    patch = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    twin = tiny_model.fast(precision="bf16")
    a = evaluate_patch(tiny_model, patch, tiny_images, 1, size=0.3, placements=3)
    b = evaluate_patch(twin, patch, tiny_images, 1, size=0.3, placements=3)
    assert torch.equal(a.label_patched, b.label_patched) and torch.equal(a.target_prob, b.target_prob)


def test_bad_precision(tiny_model):
    with pytest.raises(AdvexError, match="unknown precision 'int8'; use one of fp32, bf16, fp16"):
        tiny_model.fast(precision="int8")
