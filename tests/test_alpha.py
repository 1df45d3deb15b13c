"""alpha-CROWN with every bound's slopes optimised (advex.certify.alpha): sound against exact
minima and sampled outputs, never looser than CROWN or than final-layer alpha-CROWN, the
patch path equal to the dense path, the memory fallback and the deadline."""

import numpy as np
import pytest
import torch
from exact import exact_min, layers_of
from test_bab import random_net
from torch import nn

from advex.certify import margin_spec, trace
from advex.certify.alpha import alpha_crown, init_slopes, make_plan
from advex.certify.bounds import InputSet, backsub, crown_intermediate, patch_bounds, spec_bounds
from advex.errors import AdvexWarning

pytest.importorskip("scipy")


def deep_net(seed: int, din: int = 3, width: int = 12, depth: int = 4) -> nn.Sequential:
    return random_net(seed, din, hidden=(width,) * depth)


def conv_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(6, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 10), nn.ReLU(),
        nn.Linear(10, 3),
    ).eval()  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_bounds_are_below_the_exact_minimum_and_tighten_in_order(seed):
    net = deep_net(seed)
    x = torch.rand(1, 3, generator=torch.Generator().manual_seed(50 + seed))
    C = margin_spec(net(x).argmax(1), 3)
    nodes = trace(net, (3,))
    eps = 0.3
    inp = InputSet.ball(x, eps, "linf")
    crown = spec_bounds(nodes, inp, C, method="crown")
    final = spec_bounds(nodes, inp, C, method="alpha-crown", alpha_intermediate=False)
    full = alpha_crown(nodes, inp, C, steps=30)
    assert (final >= crown - 1e-6).all() and (full.lower >= final - 1e-6).all()
    layers = layers_of(net)
    for s, c in enumerate(C[0]):
        exact = exact_min(layers, inp.lower[0].numpy(), inp.upper[0].numpy(), c.double().numpy())
        assert float(full.lower[0, s]) <= exact + 1e-5
    # the intermediate bounds found contain every sampled pre-activation
    pts = inp.lower + (inp.upper - inp.lower) * torch.rand(4000, 3)
    acts = {}
    h = pts
    for j, m in enumerate(net, 1):
        if isinstance(m, nn.ReLU):
            acts[j] = h
        h = m(h)
    for r, (lo, hi) in full.pre.items():
        z = acts[r]
        assert (z >= lo - 1e-5).all() and (z <= hi + 1e-5).all()


def test_optimised_intermediate_bounds_make_a_difference():
    """On a deeper network at a radius where CROWN's intermediate bounds are loose, optimising
    them raises the final bound beyond what final-layer slopes reach."""
    gains = []
    for seed in range(4):
        net = deep_net(seed, din=4, width=24, depth=5)
        x = torch.rand(8, 4, generator=torch.Generator().manual_seed(seed))
        C = margin_spec(net(x).argmax(1), 3)
        inp = InputSet.ball(x, 0.3, "linf")
        nodes = trace(net, (4,))
        crown = spec_bounds(nodes, inp, C, method="crown")
        final = spec_bounds(nodes, inp, C, method="alpha-crown", alpha_intermediate=False)
        gains.append(float((alpha_crown(nodes, inp, C).lower - final).mean()) / float((final - crown).mean()))
    assert min(gains) > 0.3  # at least a third again of what final-layer slopes gain over CROWN


def test_patch_and_dense_paths_agree():
    """At the slope rule's own slopes, each intermediate bound of the plan -- as patches with
    per-neuron slopes on their windows for the convolutional chain, dense with per-neuron slopes
    for the rest -- equals CROWN's dense back-substitution from the same bounds below."""
    net = conv_net(0)
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    nodes = trace(net, (1, 12, 12))
    inp = InputSet.ball(x, 0.05, "linf")
    _, pre = crown_intermediate(nodes, inp, "crown")
    plan = make_plan(nodes, pre)
    assert plan.chains and set(plan.idx) - set(plan.chains)  # both paths are exercised
    alphas = init_slopes(pre, plan, 2)
    for r, idx in plan.idx.items():
        p = nodes[r].inputs[0]
        n = pre[r][0][0].numel()
        eye = torch.eye(n).expand(3, n, n).reshape(3, n, *nodes[p].shape)
        b = inp.concretize(*backsub(nodes, p, torch.cat([eye, -eye], 1), pre, "crown"))
        want_l, want_u = b[:, :n].gather(1, idx), -b[:, n:].gather(1, idx)
        if r in plan.chains:
            got_l, got_u = patch_bounds(nodes, plan.chains[r], p, idx, inp, pre, "crown", alphas[r])
            assert set(alphas[r]) == set(plan.below[r])  # a slope window per ReLU below, filled on the way
        else:
            u = idx.shape[1]
            sel = torch.zeros(3, u, n).scatter_(2, idx.unsqueeze(-1), 1.0).reshape(3, u, *nodes[p].shape)
            g = inp.concretize(*backsub(nodes, p, torch.cat([sel, -sel], 1), pre, "crown", alphas[r]))
            got_l, got_u = g[:, :u], -g[:, u:]
        ok = plan.valid[r]
        assert torch.allclose(got_l[ok], want_l[ok], atol=1e-5) and torch.allclose(got_u[ok], want_u[ok], atol=1e-5)


def test_conv_network_bounds_are_sound_and_tighter():
    net = conv_net(1)
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    y = net(x).argmax(1)
    C = margin_spec(y, 3)
    nodes = trace(net, (1, 12, 12))
    inp = InputSet.ball(x, 0.08, "linf")
    final = spec_bounds(nodes, inp, C, method="alpha-crown", alpha_intermediate=False)
    full = alpha_crown(nodes, inp, C)
    assert (full.lower >= final - 1e-5).all() and (full.lower > final + 1e-3).any()
    pts = (x.unsqueeze(1) + 0.08 * (2 * torch.rand(4, 500, 1, 12, 12) - 1)).clamp(0, 1)
    with torch.no_grad():
        z = net(pts.flatten(0, 1)).view(4, 500, 3)
    margins = torch.einsum("nsk,nck->nsc", z, C).amin(1)
    assert (margins >= full.lower - 1e-4).all()


def test_memory_fallback_and_deadline():
    net = conv_net(2)
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    C = margin_spec(net(x).argmax(1), 3)
    nodes = trace(net, (1, 12, 12))
    inp = InputSet.ball(x, 0.08, "linf")
    with pytest.warns(AdvexWarning, match="the final layer's only are optimised"):
        small = alpha_crown(nodes, inp, C, budget=1)
    final = spec_bounds(nodes, inp, C, method="alpha-crown", alpha_intermediate=False)
    assert torch.allclose(small.lower, final, atol=1e-5)
    crown = spec_bounds(nodes, inp, C, method="crown")
    late = alpha_crown(nodes, inp, C, steps=50, deadline=0.0)  # long past: CROWN's bound, one pass
    assert (late.lower >= crown - 1e-6).all() and (late.lower <= final + 1e-6).all()


def test_cpu_batches_split_at_their_own_target_with_the_same_bounds(monkeypatch, recwarn):
    import advex.certify.alpha as alpha

    net = conv_net(2)
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    C = margin_spec(net(x).argmax(1), 3)
    nodes = trace(net, (1, 12, 12))
    inp = InputSet.ball(x, 0.08, "linf")
    whole = alpha_crown(nodes, inp, C)
    assert whole.plan is not None  # one optimisation: its slopes come back
    calls = []
    real = alpha.alpha_crown

    def counted(*a, **kw):
        calls.append(a[1].x.shape[0])
        return real(*a, **kw)

    monkeypatch.setattr(alpha, "alpha_crown", counted)
    monkeypatch.setattr(alpha, "CPU_BATCH_MEMORY", 1)  # every batch over the CPU's target
    split = counted(nodes, inp, C)
    assert calls == [4, 2, 1, 1, 2, 1, 1]  # halves down to single inputs
    assert torch.allclose(split.lower, whole.lower, atol=1e-5)
    assert not [w for w in recwarn if issubclass(w.category, AdvexWarning)]  # each input in full


def test_skip_proven_leaves_proven_inputs_at_crown():
    net = conv_net(3)
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    y = net(x).argmax(1)
    y[:3] = (y[:3] + 1) % 3  # wrong labels: those margins cannot be proven
    C = margin_spec(y, 3)
    nodes = trace(net, (1, 12, 12))
    inp = InputSet.ball(x, 0.02, "linf")
    crown = spec_bounds(nodes, inp, C, method="crown")
    proven = (crown > 0).all(1)
    assert proven.any() and (~proven).any()
    got = spec_bounds(nodes, inp, C, method="alpha-crown", skip_proven=True)
    full = spec_bounds(nodes, inp, C, method="alpha-crown")
    assert torch.equal(got[proven], crown[proven])
    assert torch.allclose(got[~proven], full[~proven], atol=1e-5)


def test_a_network_ending_in_a_relu():
    """ERAN's VNN-COMP networks end in a ReLU: bounded as an intermediate layer and passed by
    the final back-substitution too (its slopes were once keyed alike and clashed)."""
    torch.manual_seed(0)
    net = nn.Sequential(*random_net(5, 3, hidden=(12, 12), classes=4), nn.ReLU()).eval()
    x = torch.rand(1, 3, generator=torch.Generator().manual_seed(7))
    C = margin_spec(net(x).argmax(1), 4)  # 3 specs: never twice a count of unstable neurons
    nodes = trace(net, (3,))
    inp = InputSet.ball(x, 0.3, "linf")
    crown = spec_bounds(nodes, inp, C, method="crown")
    full = alpha_crown(nodes, inp, C, steps=30)
    assert len(nodes) - 1 in full.plan.idx  # the last ReLU's input bounds optimised too
    assert (full.lower >= crown - 1e-6).all() and (full.lower > crown + 1e-3).any()
    layers = [*layers_of(net), (np.eye(4), np.zeros(4))]  # the final ReLU, then the identity
    for s, c in enumerate(C[0]):
        exact = exact_min(layers, inp.lower[0].numpy(), inp.upper[0].numpy(), c.double().numpy())
        assert float(full.lower[0, s]) <= exact + 1e-5
    outs = net(inp.lower + (inp.upper - inp.lower) * torch.rand(4000, 3)) @ C[0].T
    assert (outs >= full.lower - 1e-5).all()
