"""Certification: bounds that contain every sampled and attacked output, tightness order,
exactness where it must be exact, the soundness alarm, and bad input."""

import sys

import pytest
import torch
from torch import nn

from advex.attacks import AdvexWarning
from advex.certify import (
    UnsoundBound,
    UnsupportedLayer,
    batchnorm_stats,
    bounds,
    certify,
    margin_spec,
    trace,
    worst_case_logits,
)
from advex.certify.bounds import InputSet, crown_intermediate
from advex.errors import AdvexError
from advex.models import Classifier
from advex.models.archs import Residual, small


def _bn(c, g):
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
        bn.running_var.copy_(0.5 + torch.rand(c, generator=g))
        bn.weight.copy_(torch.randn(c, generator=g))  # some negative scales too
        bn.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return bn


def _nets():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    body = nn.Sequential(_bn(4, g), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    return {
        "small": small(1, 12, 5),
        "bn-avgpool": nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            _bn(4, g),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(4, 6, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6 * 3 * 3, 20),
            nn.ReLU(),
            nn.Linear(20, 5),
        ),  # fmt: skip
        "residual": nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            Residual(body),
            nn.ReLU(),
            Residual(nn.Sequential(nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1)), nn.Conv2d(4, 8, 1, stride=2)),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32, 5),
        ),  # fmt: skip
    }


def _samples(x, eps, norm, n, g):
    """n points per input in the ball (half of them on its surface / box corners), clipped to [0, 1]."""
    shape = (n, *x.shape)
    if norm == "linf":
        d = (torch.rand(shape, generator=g) * 2 - 1) * eps
        d[: n // 2] = torch.sign(d[: n // 2]) * eps  # vertices: where linear pieces take their extremes
        return (x[None] + d).clamp(0, 1)
    d = torch.randn(shape, generator=g)
    d = d / d.flatten(2).norm(dim=-1).view(n, x.shape[0], *[1] * (x.ndim - 1)) * eps
    d[n // 2 :] *= torch.rand(n - n // 2, x.shape[0], *[1] * (x.ndim - 1), generator=g)
    return (x[None] + d).clamp(0, 1)


@pytest.mark.parametrize("name", ["small", "bn-avgpool", "residual"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bounds_contain_sampled_outputs_and_tighten_in_order(name, norm):
    net = _nets()[name].eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 12, 12, generator=g)
    eps = 0.03 if norm == "linf" else 0.3
    pts = _samples(x, eps, norm, 500, g)  # 2000 points per network and norm
    with torch.no_grad():
        z = net(pts.flatten(0, 1)).view(500, 4, -1)
    methods = ["crown", "alpha-crown"] + (["ibp"] if norm == "linf" else [])
    got = {m: bounds(net, x, eps=eps, norm=norm, method=m) for m in methods}
    got["wong-kolter"] = bounds(net, x, eps=eps, norm=norm, method="crown", slope="wong-kolter")
    for m, b in got.items():
        assert (z >= b.lower - 1e-5).all() and (z <= b.upper + 1e-5).all(), m
    assert (got["crown"].lower >= (got["ibp"].lower if norm == "linf" else -1e9) - 1e-5).all()
    assert (got["alpha-crown"].lower >= got["crown"].lower - 1e-6).all()
    assert (got["alpha-crown"].upper <= got["crown"].upper + 1e-6).all()
    if norm == "linf":
        width = {m: float((b.upper - b.lower).mean()) for m, b in got.items()}
        assert width["crown"] < width["ibp"]


def test_margin_bounds_contain_pgd_points_and_certify_is_consistent():
    net = _nets()["bn-avgpool"].eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(16, 1, 12, 12, generator=g)
    with torch.no_grad():
        y = net(x).argmax(1)
    for m in ("ibp", "crown", "alpha-crown"):
        res = certify(net, x, y, eps=0.005, method=m, attack_steps=20)  # checks clean and PGD points inside
        assert res.correct.all() and (res.certified <= res.attacked).all()
        assert torch.isinf(res.lower.gather(1, y[:, None])).all()
    loose = certify(net, x, y, eps=0.005, method="ibp", attack=False)
    tight = certify(net, x, y, eps=0.005, method="alpha-crown", attack=False)
    assert int(tight.certified.sum()) >= int(loose.certified.sum()) and int(tight.certified.sum()) > 0


def test_a_linear_network_is_bounded_exactly():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Linear(7, 3))
    x = torch.rand(2, 3, 2, 2)
    b = bounds(lin, x, eps=0.1, method="crown")
    w = lin[2].weight @ lin[1].weight  # (3, 12)
    c = lin[2].weight @ lin[1].bias + lin[2].bias
    lo, hi = (x - 0.1).clamp(0, 1).flatten(1), (x + 0.1).clamp(0, 1).flatten(1)
    exact = lo @ w.clamp(min=0).T + hi @ w.clamp(max=0).T + c
    assert torch.allclose(b.lower, exact, atol=1e-5)
    assert (bounds(lin, x, eps=0.1, method="ibp").lower < exact - 1e-3).any()  # IBP is not exact here


def test_chunks_bounded_on_one_traced_network_do_not_interfere():
    """``bounds`` traces once and bounds chunk after chunk on it: each chunk's bounds are those
    of its images alone (a call's intermediate bounds live in the call, not on the network)."""
    net = _nets()["bn-avgpool"].eval()
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(6))
    for method, slope in [("crown", "crown"), ("crown", "wong-kolter"), ("alpha-crown", "crown")]:
        whole = bounds(net, x, eps=0.03, method=method, slope=slope, alpha_steps=5)
        parts = bounds(net, x, eps=0.03, method=method, slope=slope, alpha_steps=5, batch_size=2)
        last = bounds(net, x[4:], eps=0.03, method=method, slope=slope, alpha_steps=5)
        for got in (parts.lower[4:], last.lower):
            assert torch.allclose(whole.lower[4:], got, atol=1e-5), method
        assert torch.allclose(whole.lower, parts.lower, atol=1e-5), method
        assert torch.allclose(whole.upper, parts.upper, atol=1e-5), method


def test_non_square_convolutions_are_bounded():
    """The patch rule needs square kernels and strides; other convolutions take the dense rule."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, (3, 1)), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=(2, 1)), nn.ReLU(),
                        nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()  # fmt: skip
    g = torch.Generator().manual_seed(7)
    x = torch.rand(3, 1, 12, 12, generator=g)
    with torch.no_grad():
        z = net(_samples(x, 0.05, "linf", 300, g).flatten(0, 1)).view(300, 3, -1)
    ibp = bounds(net, x, eps=0.05, method="ibp")
    for slope in ("crown", "wong-kolter"):
        b = bounds(net, x, eps=0.05, method="crown", slope=slope)
        assert (z >= b.lower - 1e-5).all() and (z <= b.upper + 1e-5).all()
        assert (b.lower >= ibp.lower - 1e-5).all()


def test_margin_spec():
    C = margin_spec(torch.tensor([2, 0]), 4)
    assert C.shape == (2, 3, 4)
    assert C[0].tolist() == [[-1, 0, 1, 0], [0, -1, 1, 0], [0, 0, 1, -1]]


def test_normalisation_inside_a_classifier_is_bounded():
    net = small(3, 8, 4).eval()
    clf = Classifier(net, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), classes=list("abcd"), input_size=8)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 8, 8, generator=g)
    b = bounds(clf, x, eps=0.01, method="crown")
    with torch.no_grad():
        z = clf(_samples(x, 0.01, "linf", 300, g).flatten(0, 1)).view(300, 3, -1)
    assert (z >= b.lower - 1e-5).all() and (z <= b.upper + 1e-5).all()


def test_an_unsound_bound_is_a_loud_error(monkeypatch):
    import advex.certify.api as api

    net = _nets()["small"].eval()
    x = torch.rand(4, 1, 12, 12)
    with torch.no_grad():
        y = net(x).argmax(1)
    monkeypatch.setattr(api, "spec_bounds", lambda *a, **k: torch.full((4, 4), 5.0))  # a "bound" that is a lie
    with pytest.raises(UnsoundBound, match="violated"):
        certify(net, x, y, eps=0.1, method="crown")


def test_bad_input():
    x = torch.rand(2, 1, 12, 12)
    net = _nets()["small"].eval()
    with pytest.raises(UnsupportedLayer, match=r"1 \(Tanh\)"):
        bounds(nn.Sequential(nn.Flatten(), nn.Tanh(), nn.Linear(144, 3)), x, eps=0.1)
    with pytest.raises(UnsupportedLayer, match="MaxPool2d"):
        bounds(nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3)), x, eps=0.1)
    with pytest.raises(AdvexError, match=r"eps must be in \(0, 1\]"):
        bounds(net, x, eps=0)
    with pytest.raises(AdvexError, match=r"eps must be in \(0, 1\]"):
        bounds(net, x, eps=1.5)
    with pytest.raises(AdvexError, match="unknown method 'lp'"):
        bounds(net, x, eps=0.1, method="lp")
    with pytest.raises(AdvexError, match="IBP bounds only L-inf"):
        bounds(net, x, eps=0.1, method="ibp", norm="l2")
    with pytest.raises(AdvexError, match=r"label 9 is out of range: the model has 5 classes \(0 to 4\)"):
        certify(net, x, torch.tensor([0, 9]), eps=0.1)
    bn_net = _nets()["bn-avgpool"].train()
    with pytest.warns(AdvexWarning, match="training mode"):
        bounds(bn_net, x, eps=0.01)
    assert bn_net.training  # left as it was


def test_cli_certify_grid(tmp_path, capsys):
    from helpers import SHARED

    from advex.cli import main

    if not (SHARED / "mnist").is_dir():
        pytest.skip("../shared/datasets not present")
    out = tmp_path / "c"
    rc = main(["certify", "--model", "mnist-small-pgd", "--dataset", "mnist", "--eps", "0.005,0.02",
               "--method", "ibp,crown", "--n", "20", "--attack-steps", "10", "--out", str(out)])  # fmt: skip
    assert rc == 0
    s = __import__("json").loads((out / "certify.json").read_text())
    rows = {(r["eps"], r["method"]): r for r in s["results"]}
    assert set(rows) == {(0.005, "ibp"), (0.005, "crown"), (0.02, "ibp"), (0.02, "crown")}
    for r in rows.values():
        assert r["certified_accuracy"] <= r["attacked_accuracy"] <= r["clean_accuracy"]
        assert len(r["per_sample"]) == 20
    assert rows[(0.02, "crown")]["certified_accuracy"] >= rows[(0.02, "ibp")]["certified_accuracy"]
    assert (out / "certified.png").stat().st_size > 10_000
    assert "certified" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eps", "0"], "a radius of 0"),
        (["--eps", "2"], "larger than the whole [0, 1] pixel range"),
        (["--eps", "0.1", "--method", "lp"], "unknown method 'lp'"),
        (["--eps", "0.1", "--method", "ibp", "--norm", "l2"], "IBP bounds only L-inf"),
        (["--eps", "x"], "--eps"),
    ],
)
def test_cli_certify_bad_input(tmp_path, capsys, argv, message):
    from advex.cli import main

    out = tmp_path / "c"
    rc = main(["certify", "--model", "mnist-small", "--dataset", "mnist", *argv, "--out", str(out)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith("advex: error:") and message in last
    assert not out.exists()


# ---------------------------------------------------------------------------- certified training
@pytest.mark.parametrize("method,beta", [("ibp", 1.0), ("crown-ibp", 0.5), ("crown-ibp", 1.0), ("convex", 1.0)])
def test_worst_case_logits_are_sound_and_differentiable(method, beta):
    net = _nets()["small"]
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 1, 12, 12, generator=g)
    y = torch.randint(5, (6,), generator=g)
    keep = torch.ones(6, 5, dtype=torch.bool)
    keep[torch.arange(6), y] = False
    worst = worst_case_logits(net, x, y, eps=0.02, method=method, beta=beta)
    assert (worst[~keep] == 0).all()
    lb = -worst[keep].view(6, 4)  # lower bounds of z_y - z_j
    ibp = -worst_case_logits(net, x, y, eps=0.02, method="ibp").detach()[keep].view(6, 4)
    if method == "convex":  # the dual bound is at least IBP's, and strictly better somewhere here
        assert (lb.detach() >= ibp - 1e-6).all() and (lb.detach() > ibp + 1e-3).any()
    if method == "crown-ibp":  # at beta 0 it is IBP
        no_crown = worst_case_logits(net, x, y, eps=0.02, method="crown-ibp", beta=0.0).detach()
        assert torch.equal(-no_crown[keep].view(6, 4), ibp)
    lb.sum().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        z = net(_samples(x, 0.02, "linf", 300, g).flatten(0, 1)).view(300, 6, 5)
        m = z.gather(2, y.view(1, 6, 1).expand(300, 6, 1)) - z  # (300, 6, 5)
        assert (m[:, keep].view(300, 6, 4) >= lb.detach() - 1e-5).all()
    with pytest.raises(AdvexError, match="unknown certified-training method 'crown'"):
        worst_case_logits(net, x, y, eps=0.02, method="crown")


def test_training_mode_batchnorm_is_bounded_with_the_batch_statistics():
    """Certified training of a BatchNorm network (Shi et al. 2021): the bounds use the clean
    batch's statistics, so at eps 0 they are the margins of the training-mode forward pass
    exactly; they contain every sampled point under those statistics, and are differentiable."""
    import copy

    from advex.models.archs import cnn7

    torch.manual_seed(0)
    net = cnn7(1, 12, 5, width=4, linear=16).train()
    g = torch.Generator().manual_seed(5)
    x = torch.rand(8, 1, 12, 12, generator=g)
    y = torch.randint(5, (8,), generator=g)
    with batchnorm_stats(net) as stats:
        z = net(x)
    assert len(stats) == 6
    keep = torch.ones(8, 5, dtype=torch.bool)
    keep[torch.arange(8), y] = False
    exact = worst_case_logits(net, x, y, eps=0.0, batch_stats=stats).detach()
    assert torch.allclose(exact, (z - z.gather(1, y[:, None])).detach(), atol=1e-5)
    with pytest.raises(UnsupportedLayer, match="training mode"):
        trace(net, (1, 12, 12))
    with pytest.raises(UnsupportedLayer, match="training mode"):
        worst_case_logits(net, x, y, eps=0.01)
    lb = -worst_case_logits(net, x, y, eps=0.01, batch_stats=stats)[keep].view(8, 4)
    lb.sum().backward()
    assert net[1].weight.grad is not None and net[1].weight.grad.abs().sum() > 0
    fixed = copy.deepcopy(net).eval()  # the same network normalising with the batch's statistics
    for m, f in zip(net.modules(), fixed.modules()):
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            f.running_mean.copy_(stats[id(m)][0].detach())
            f.running_var.copy_(stats[id(m)][1].detach())
    with torch.no_grad():
        assert torch.allclose(fixed(x), z, atol=1e-5)
        pts = _samples(x, 0.01, "linf", 200, g).flatten(0, 1)
        zz = fixed(pts).view(200, 8, 5)
        m = zz.gather(2, y.view(1, 8, 1).expand(200, 8, 1)) - zz
        assert (m[:, keep].view(200, 8, 4) >= lb.detach() - 1e-5).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("slope", ["crown", "wong-kolter"])
def test_patches_give_the_dense_bounds(norm, slope, monkeypatch):
    """Every intermediate bound computed as patches (each neuron's coefficients on its receptive
    field, the zero padding dropped lazily, neurons one by one or every channel of a position
    at once) equals the dense back-substitution's, through
    convolutions with padding and stride, per-channel affine maps, average pooling and a
    convolution right after another; and so do both in the smallest chunks (one position or one
    neuron at a time, each chunk's windows cut from its own rows of the maps)."""
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), _bn(4, g), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.Conv2d(6, 5, 3, padding=2), nn.ReLU(), nn.Conv2d(5, 3, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(3 * 2 * 2, 4),
    ).eval()  # fmt: skip
    x = torch.rand(5, 2, 12, 12, generator=g)
    nodes = trace(net, (2, 12, 12))
    inp = InputSet.ball(x, 0.05 if norm == "linf" else 0.5, norm)
    # every neuron bounded by both paths: the same bounds
    _, dense = crown_intermediate(nodes, inp, slope, patches=False, intersect_ibp=False)
    _, patched = crown_intermediate(nodes, inp, slope, patches=True, intersect_ibp=False)
    assert len(patched) == 3 and any(((lo < 0) & (hi > 0)).any() for lo, hi in patched.values())
    for r, (lo, hi) in dense.items():
        assert torch.allclose(patched[r][0], lo, atol=1e-5) and torch.allclose(patched[r][1], hi, atol=1e-5), r
    # by default the dense path bounds only the neurons IBP leaves unstable, the patches may bound
    # them all (where most are unstable): never looser
    _, dense = crown_intermediate(nodes, inp, slope, patches=False)
    _, patched = crown_intermediate(nodes, inp, slope, patches=True)
    for r, (lo, hi) in dense.items():
        assert (patched[r][0] >= lo - 1e-5).all() and (patched[r][1] <= hi + 1e-5).all(), r
    monkeypatch.setattr(sys.modules["advex.certify.bounds"], "CPU_CHUNK_MEMORY", 1)
    for patches, whole in ((False, dense), (True, patched)):
        _, chunked = crown_intermediate(nodes, inp, slope, patches=patches)
        for r, (lo, hi) in whole.items():
            assert torch.allclose(chunked[r][0], lo, atol=1e-5) and torch.allclose(chunked[r][1], hi, atol=1e-5), r
