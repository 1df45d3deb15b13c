"""APGD, Square and `advex evaluate` (ensemble, sanity checks, CLI)."""

import json

import pytest
import torch
from helpers import needs_data, robust
from torch import nn

from advex.attacks import APGD, PGD, Square
from advex.attacks.apgd import checkpoints, dlr_loss
from advex.errors import AdvexError
from advex.evaluation import Evaluation, evaluate, sanity_checks


def test_apgd_checkpoints_follow_the_paper():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_dlr_is_scale_invariant():
    z = torch.randn(6, 10)
    y = torch.randint(0, 10, (6,))
    assert torch.allclose(dlr_loss(z, y), dlr_loss(7.0 * z + 3.0, y), atol=1e-5)


@needs_data
def test_apgd_is_at_least_as_strong_as_pgd(mnist200):
    from advex.models import load

    x, y = mnist200
    m = load("mnist-small-pgd")
    pgd = robust(PGD(eps=0.3, steps=20)(m, x, y), y)
    for loss in ("ce", "dlr"):
        assert robust(APGD(eps=0.3, steps=50, loss=loss)(m, x, y), y) <= pgd + 0.01


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.3)])
def test_apgd_stays_in_ball_and_box_and_hits_targets(tiny_model, norm, eps):
    x = torch.rand(16, 3, 8, 8)
    res = APGD(eps=eps, norm=norm, steps=30)(tiny_model, x)
    d = (res.x_adv - x).flatten(1)
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps * (1 + 1e-4)).all()
    target = (tiny_model.predict(x)[0] + 1) % 4
    res = APGD(eps=0.5, norm="linf", steps=30, loss="dlr")(tiny_model, x, target=target)
    assert res.success.float().mean() >= 0.9 and torch.equal(res.label_adv[res.success], target[res.success])


@needs_data
def test_square_is_black_box_and_breaks_a_standard_model(mnist200):
    from advex.models import load

    x, y = mnist200
    base = load("mnist-small")

    class NoGrad(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = base

        def forward(self, v):
            assert not torch.is_grad_enabled(), "Square must not use gradients"
            return self.m(v)

    res = Square(eps=0.3, queries=300)(NoGrad(), x, y)
    assert robust(res, y) <= 0.05
    assert ((res.x_adv - x).abs().amax() <= 0.3 + 1e-6) and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.extra["queries"].max() <= 300


@needs_data
def test_ensemble_is_the_per_sample_worst_case(mnist200):
    from advex.models import load

    x, y = mnist200
    ev = evaluate(load("mnist-small-pgd"), x[:100], y[:100], [0.2, 0.3], steps=20, queries=200, n_targets=2)
    for i in range(2):
        assert ev.ensemble[i] <= min(acc[i] for acc in ev.per_attack.values()) + 1e-9
        assert ev.robust[i].float().mean().item() == pytest.approx(ev.ensemble[i])
    assert ev.ensemble[1] <= ev.ensemble[0] <= ev.clean_acc
    assert not any("unbounded" in w for w in ev.warnings)


@needs_data
def test_sanity_checks_flag_a_gradient_masking_model(mnist200):
    from advex.models import load

    x, y = mnist200
    base = load("mnist-small")

    class Quantised(nn.Module):  # rounding the input: zero gradients, same decisions
        def forward(self, v):
            return base(torch.round(v * 2) / 2)

    ev = evaluate(Quantised(), x[:100], y[:100], [0.3], steps=20, queries=300, n_targets=1)
    text = " ".join(ev.warnings)
    assert "black-box Square beats white-box APGD-CE" in text
    assert "unbounded attack check" in text


def test_monotonicity_check():
    ev = Evaluation([0.1, 0.2], "linf", 2, 1.0, {"apgd-ce": [0.5, 0.7]}, [0.5, 0.7], torch.zeros(2, 2, dtype=bool))
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    msgs = sanity_checks(net, torch.rand(2, 3, 2, 2), torch.tensor([0, 1]), ev, steps=2, seed=0, batch_size=8)
    assert any("accuracy rises with eps" in m for m in msgs)


@needs_data
def test_cli_evaluate_writes_json_png_and_table(tmp_path, capsys):
    from advex.cli import main

    rc = main(
        [
            "evaluate",
            "--model",
            "mnist-small-pgd",
            "--dataset",
            "mnist",
            "--eps",
            "0.1,0.3",
            "--n",
            "50",
            "--steps",
            "10",
            "--queries",
            "100",
            "--n-targets",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = json.loads((tmp_path / "evaluation.json").read_text())
    assert out["eps"] == [0.1, 0.3] and set(out["per_attack"]) == {"apgd-ce", "apgd-t", "square"}
    assert (tmp_path / "accuracy_vs_eps.png").stat().st_size > 5000
    assert "ensemble" in capsys.readouterr().out


def test_evaluate_bad_input(tiny_model, capsys):
    from advex.cli import main

    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(AdvexError, match="unknown attack 'cw2'"):
        evaluate(tiny_model, x, torch.zeros(4), [0.1], attacks=["cw2"])
    with pytest.raises(AdvexError, match="supports norm 'linf' or 'l2'"):
        evaluate(tiny_model, x, torch.zeros(4), [0.1], norm="l1")
    assert main(["evaluate", "--model", "mnist-small", "--dataset", "mnist", "--eps", "8", "--out", "/tmp/x"]) == 2
    assert "larger than the whole [0, 1] pixel range" in capsys.readouterr().err


@needs_data
def test_square_l2_keeps_the_norm_and_breaks_a_standard_model(mnist200):
    from advex.models import load

    x, y = mnist200
    res = Square(eps=2.0, norm="l2", queries=500)(load("mnist-small"), x, y)
    assert (res.l2 <= 2.0 + 1e-4).all() and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert robust(res, y) <= 0.35
    assert res.extra["queries"].max() <= 500


def test_evaluate_l2_runs_the_ensemble(tiny_model):
    x = torch.rand(8, 3, 8, 8)
    y = tiny_model.predict(x)[0]
    ev = evaluate(tiny_model, x, y, [0.0, 0.5], norm="l2", steps=10, queries=50, n_targets=1, sanity=False)
    assert ev.ensemble[0] == 1.0 and ev.ensemble[1] <= min(a[1] for a in ev.per_attack.values())


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_square_linf_proposals_are_written_in_place_and_undone_where_not_kept(layout):
    from advex.attacks.square import _linf_step

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 10, 10, generator=g).contiguous(memory_format=layout)
    best = (x + 0.05 * torch.randn(6, 3, 10, 10, generator=g)).clamp(0, 1).contiguous(memory_format=layout)
    before = best.clone()
    undo = _linf_step(x, best, 0.1, 0.2, g)
    proposal = best.clone()
    changed = (proposal != before).flatten(1).any(1)
    assert changed.all()  # every image got a new window ...
    window = (proposal != before).any(1)  # ... a square of side round(sqrt(0.2 * 100)) = 4, at most
    assert (window.flatten(1).sum(1) <= 16).all()
    assert ((proposal - x).abs()[window[:, None].expand_as(x)] <= 0.1 + 1e-6).all()  # at +-eps from x, or clipped
    keep = torch.tensor([True, False, True, False, False, True])
    undo(keep)
    assert torch.equal(best[keep], proposal[keep]) and torch.equal(best[~keep], before[~keep])
