"""Branch and bound (method="bab"): its answers against exact ones (a MILP on small random
networks), every domain's bound below the exact minimum over that domain, counterexamples that
hold up, and the zoo's MNIST network."""

import functools

import pytest
import torch
from exact import exact_min, layers_of
from helpers import needs_data
from torch import nn

from advex.certify import bounds, certify, margin_spec, trace
from advex.certify.bab import FALSIFIED, TIMEOUT, VERIFIED, Problem, Settings, Verifier, _Domains, _Pool
from advex.errors import AdvexError

pytest.importorskip("scipy")


def random_net(seed: int, din: int, hidden=(16, 16), classes: int = 3) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    dims, mods = [din, *hidden, classes], []
    for i in range(len(dims) - 1):
        lin = nn.Linear(dims[i], dims[i + 1])
        with torch.no_grad():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / dims[i] ** 0.5)
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.3)
        mods += [lin, nn.ReLU()]
    return nn.Sequential(*mods[:-1]).eval()


@functools.cache  # made once for all the tests that use it (the MILPs are most of their time)
def hard_problem(seed: int):
    """A random network and a point, with the L-inf radius at which its exact worst margin
    crosses 0 (bisection on the MILP): the problems just inside and outside it are the hard ones."""
    din = 2 + seed % 2
    net = random_net(seed, din)
    x0 = torch.rand(1, din, generator=torch.Generator().manual_seed(100 + seed))
    y = int(net(x0).argmax())
    C = margin_spec(torch.tensor([y]), 3)[0]
    layers = layers_of(net)

    @functools.cache
    def worst(eps):
        lo, hi = (x0 - eps)[0].numpy(), (x0 + eps)[0].numpy()
        return min(exact_min(layers, lo, hi, c.double().numpy()) for c in C)

    a, b = 0.0, 1.0
    for _ in range(10):
        a, b = ((a + b) / 2, b) if worst((a + b) / 2) > 0 else (a, (a + b) / 2)
    return net, x0, C, layers, worst, a


VARIANTS = {"relu-joint": dict(separate_groups=False), "relu-intermediate": dict(intermediate=True)}


@pytest.mark.parametrize("split", ["relu", "input", "relu-babsr", "input-sensitivity", *VARIANTS])
def test_answers_agree_with_the_exact_milp(split):
    extra = VARIANTS.get(split, {})
    split, branching = (split.split("-") + ["fsb"])[:2]
    branching = "fsb" if extra else branching
    branching, input_branching = (
        (branching, "widest") if split == "relu" else ("fsb", branching.replace("fsb", "widest"))
    )
    decided = 0
    for seed in range(3):
        net, x0, C, _, worst, critical = hard_problem(seed)
        for eps in (0.97 * critical, 1.03 * critical):
            truth = VERIFIED if worst(eps) > 0 else FALSIFIED
            v = Verifier(
                trace(net, (x0.shape[1],)),
                net,
                Settings(
                    timeout=300,
                    max_domains=20_000 if split == "relu" else 5_000,
                    split=split,
                    branching=branching,
                    input_branching=input_branching,
                    **extra,
                ),
            )
            got = v.verify(Problem(x0 - eps, x0 + eps, C, torch.zeros(len(C))))
            if got.status == TIMEOUT:
                continue
            decided += 1
            assert got.status == truth, (seed, eps, got)
            if got.status == FALSIFIED:  # a real counterexample: in the box, a margin <= 0
                cex = got.counterexample
                assert ((cex - x0).abs() <= eps + 1e-6).all()
                assert (net(cex[None]) @ C.T).min() <= 0
    assert decided >= 5  # of 6: the search settles near-critical problems, not only easy ones


def test_every_domain_bound_is_below_the_exact_minimum_over_it():
    net, x0, C, layers, _, critical = hard_problem(0)
    eps = 0.97 * critical
    lo, hi = x0 - eps, x0 + eps
    p = Problem(lo, hi, C, torch.zeros(len(C)))
    v = Verifier(trace(net, (x0.shape[1],)), net, Settings(split="relu", batch=8))
    v.input_split = False
    dom, _ = v.bound(_Domains(lo, hi, torch.full((1, len(C)), float("-inf"))), p, 20)
    checked = 0
    for _ in range(3):  # three rounds of splitting
        keep = (dom.choice >= 0).nonzero().flatten()[:8]
        parents = dom.take(keep)
        kids, _ = v.bound(v._children(parents), p, 10)
        assert (kids.lb >= torch.cat([parents.lb, parents.lb]) - 1e-6).all()  # never looser than the parent
        for d in range(len(kids)):
            fixed = {}
            for layer, j in enumerate(v.relus):
                for i in kids.splits[j][d].nonzero().flatten().tolist():
                    fixed[(layer, i)] = int(kids.splits[j][d, i])
            for s, c in enumerate(C):
                exact = exact_min(layers, lo[0].numpy(), hi[0].numpy(), c.double().numpy(), fixed=fixed)
                if exact is not None:  # an empty domain may have any bound
                    assert float(kids.lb[d, s]) <= exact + 1e-4
                    checked += 1
        dom = kids
    assert checked >= 20


def test_only_the_open_specs_are_bounded_and_their_bounds_do_not_change():
    """A domain bounds only the specs it has not proven (the others keep the parent's bound);
    the specs it does bound get the same bounds as when every spec is bounded (each spec has
    its own slopes and multipliers, and the objective is a sum over specs)."""
    net, x0, C, _, _, critical = hard_problem(1)
    eps = critical
    lo, hi = x0 - eps, x0 + eps
    p = Problem(lo, hi, C, torch.zeros(len(C)))
    v = Verifier(trace(net, (x0.shape[1],)), net, Settings(split="relu"))
    v.input_split = False
    root, _ = v.bound(_Domains(lo, hi, torch.full((1, len(C)), float("-inf"))), p, 20)
    kids = v._children(root.take(torch.tensor([0])))
    every, _ = v.bound(kids, p, 10)
    proven = kids.lb.clone()
    proven[:, 0] = 123.0  # spec 0 already proven in these domains
    part, _ = v.bound(_Domains(kids.lower, kids.upper, proven, kids.splits, kids.pre, kids.alphas, kids.betas,
                               kids.choice), p, 10)  # fmt: skip
    assert (part.lb[:, 0] == 123.0).all()  # kept, not bounded again
    torch.testing.assert_close(part.lb[:, 1:], every.lb[:, 1:], rtol=0, atol=1e-5)


def test_restricting_a_problem_keeps_whole_groups():
    C = torch.eye(5)
    p = Problem(torch.zeros(1, 2), torch.ones(1, 2), C, torch.arange(5.0), groups=torch.tensor([0, 0, 1, 2, 2]))
    q = p.restrict(torch.tensor([True, True, False, True, True]))
    assert q.groups.tolist() == [0, 0, 1, 1] and q.d.tolist() == [0, 1, 3, 4]
    v = torch.tensor([[-1.0, 2.0, -1.0, -3.0], [-1.0, -2.0, 1.0, -3.0]])
    assert q.worst(v).tolist() == [-1.0, -1.0]  # each group's best, the worst group


def test_each_group_gets_its_own_copy_of_the_domains_with_its_own_slopes():
    C = torch.eye(3)
    p = Problem(torch.zeros(1, 2), torch.ones(1, 2), C, torch.zeros(3), groups=torch.tensor([0, 0, 1]))
    alphas = {1: torch.arange(2 * 3 * 4.0).view(2, 3, 4)}  # two domains, three specs, four neurons
    dom = _Domains(torch.zeros(2, 2), torch.ones(2, 2), torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]]),
                   alphas=alphas)  # fmt: skip
    out = Verifier._per_group(dom, p)
    inf = float("inf")
    assert out.lb.tolist() == [[-1, -2, inf], [-4, -5, inf], [inf, inf, -3], [inf, inf, -6]]
    assert out.own.tolist() == [[0, 1], [0, 1], [2, 2], [2, 2]]  # group 1 padded by repeating its spec
    torch.testing.assert_close(out.alphas[1][2], alphas[1][0, [2, 2]])  # domain 0's slopes for spec 2
    torch.testing.assert_close(out.alphas[1][1], alphas[1][1, [0, 1]])
    assert p.worst(out.lb).tolist() == [-1, -4, -3, -6]  # each copy is judged by its own group


def test_the_pool_gives_back_exactly_what_it_was_given():
    def doms(values):
        v = torch.tensor(values, dtype=torch.float32)
        d = _Domains(v.view(-1, 1).repeat(1, 2), v.view(-1, 1).repeat(1, 2), v.view(-1, 1))
        d.splits = {3: v.view(-1, 1).to(torch.int8)}
        d.choice = v.long()
        return d

    pool, held = _Pool(), []
    for batch in ([5, 1, 7], [2, 9], [4, 8, 3, 6, 0]):
        pool.add(doms(batch))
        held += batch
        assert sorted(pool.lb.flatten().tolist()) == sorted(held)
        got = pool.pop(pool.lb.flatten().topk(2, largest=False).indices)
        for row in range(len(got)):  # each row's tensors stay together
            assert got.lower[row, 0] == got.lb[row, 0] == got.splits[3][row, 0] == got.choice[row]
        held = sorted(held)[2:]
        assert sorted(pool.lb.flatten().tolist()) == held and len(pool) == len(held)
    rest = pool.pop(torch.arange(len(pool)))
    assert sorted(rest.choice.tolist()) == held and len(pool) == 0


def test_the_pool_counts_the_domains_it_holds_and_grows_within_its_limit():
    """The memory budget counts the domains held, not the room to grow, and the buffers do not
    grow past the budget while the domains fit in it."""
    d = _Domains(torch.zeros(10, 4), torch.ones(10, 4), torch.zeros(10, 1))
    d.splits, d.choice = {3: torch.zeros(10, 4, dtype=torch.int8)}, torch.zeros(10, dtype=torch.long)
    row = d.nbytes() // 10
    free = _Pool()
    for _ in range(3):
        free.add(d)  # room for 20, then 30 + 10 (grows by half)
    assert len(free.buf) == 40 and free.nbytes() == 30 * row
    capped = _Pool(limit=35 * row)
    for _ in range(3):
        capped.add(d)
    assert len(capped.buf) == 35 and capped.nbytes() == 30 * row
    capped.add(d)  # 40 domains cannot fit in 35 rows: room for exactly as many as held
    assert len(capped.buf) == 40 and capped.nbytes() == 40 * row > capped.limit


@needs_data
def test_bab_on_the_zoo_mnist_network_settles_more_than_alpha_crown():
    from advex.data import load_dataset
    from advex.models import load

    model = load("mnist-small")
    x, y = load_dataset("mnist", "test").subset(10).floats()
    eps = 0.02
    alpha = certify(model, x, y, eps=eps, method="alpha-crown")
    r = certify(model, x, y, eps=eps, method="bab", bab=Settings(timeout=600, max_domains=150))
    assert r.status is not None and len(r.status) == 10
    assert (r.certified >= alpha.certified).all()  # what alpha-CROWN proves stays proved
    assert r.certified.sum() > alpha.certified.sum()  # and the search proves more (image 8 here)
    for i, point in r.counterexamples.items():  # every counterexample: in the ball and misclassified
        assert r.status[i] == FALSIFIED
        assert (point - x[i]).abs().max() <= eps + 1e-6 and point.min() >= 0 and point.max() <= 1
        assert model(point[None]).argmax(1).item() != y[i].item()
    rows = r.rows()
    assert {row["status"] for row in rows} <= {VERIFIED, FALSIFIED, TIMEOUT}
    assert all(row["domains"] == 0 for row, c in zip(rows, alpha.certified) if c)


def test_bab_bad_input():
    net = nn.Sequential(nn.Flatten(), random_net(0, 2))
    x, y = torch.rand(2, 1, 1, 2), torch.tensor([0, 1])
    with pytest.raises(AdvexError, match="L-inf"):
        certify(net, x, y, eps=0.1, norm="l2", method="bab")
    for t in (0, -1.0):
        with pytest.raises(AdvexError, match="timeout must be"):
            certify(net, x, y, eps=0.1, method="bab", timeout=t)
    with pytest.raises(AdvexError, match="use certify"):
        bounds(net, x, eps=0.1, method="bab")
    with pytest.raises(AdvexError, match="unknown split"):
        certify(net, x, y, eps=0.1, method="bab", bab=Settings(split="neurons"))
    with pytest.raises(AdvexError, match="unknown branching 'random'; use one of fsb, babsr"):
        certify(net, x, y, eps=0.1, method="bab", bab=Settings(branching="random"))
    with pytest.raises(AdvexError, match="unknown input branching 'random'; use one of widest, sensitivity"):
        certify(net, x, y, eps=0.1, method="bab", bab=Settings(input_branching="random"))


def test_every_falsified_sample_has_a_counterexample_that_holds():
    net = nn.Sequential(nn.Flatten(), random_net(1, 2))
    x = torch.rand(12, 1, 1, 2, generator=torch.Generator().manual_seed(3))
    y = torch.arange(12) % 3  # some labels wrong at the clean point, some right
    r = certify(net, x, y, eps=0.2, method="bab", bab=Settings(timeout=30, max_domains=2_000))
    wrong = net(x).argmax(1) != y
    assert wrong.any() and (~wrong).any()
    assert all(r.status[i] == FALSIFIED for i in wrong.nonzero().flatten().tolist())
    assert set(r.counterexamples) == {i for i, s in enumerate(r.status) if s == FALSIFIED}
    for i, point in r.counterexamples.items():
        assert (point - x[i]).abs().max() <= 0.2 + 1e-6 and net(point[None]).argmax(1).item() != y[i].item()
    assert r.certified.tolist() == [s == VERIFIED for s in r.status]


@functools.cache  # made once for both splits
def conjunction_problem(seed: int):
    """A random network, a point, the two atoms "class a (the middle one at x0) is below class
    b" and "... below class c", and the L-inf radius where their exact joint answer changes."""
    din = 2
    net = random_net(seed, din)
    x0 = torch.rand(1, din, generator=torch.Generator().manual_seed(200 + seed))
    z = net(x0)[0]
    a = int(z.argsort()[1])  # the middle logit at x0
    others = [k for k in range(3) if k != a]
    C = torch.zeros(2, 3)
    for r, k in enumerate(others):
        C[r, a], C[r, k] = 1.0, -1.0
    layers = layers_of(net)

    @functools.cache
    def worst(eps):
        return exact_min(layers, (x0 - eps)[0].numpy(), (x0 + eps)[0].numpy(), C.double().numpy(), [0.0, 0.0])

    lo_, hi_ = 0.0, 2.0
    for _ in range(10):
        lo_, hi_ = ((lo_ + hi_) / 2, hi_) if worst((lo_ + hi_) / 2) > 0 else (lo_, (lo_ + hi_) / 2)
    return net, x0, C, worst, lo_


@pytest.mark.parametrize("split", ["relu", "input"])
def test_conjunctions_agree_with_the_exact_milp(split):
    """A VNNLIB-style property: unsafe where class a (the middle one at x0) is the smallest logit, i.e. where both
    z_a - z_b <= 0 and z_a - z_c <= 0 (one group of two atoms); safe iff the larger of the
    two is > 0 everywhere, the exact answer from a MILP of min over the box of their max."""
    decided = 0
    for seed in (3, 4):
        net, x0, C, worst, lo_ = conjunction_problem(seed)
        din = x0.shape[1]
        assert 0 < lo_ < 1.9  # a radius where the answer changes
        for eps in (0.97 * lo_, 1.03 * lo_):
            truth = VERIFIED if worst(eps) > 0 else FALSIFIED
            v = Verifier(trace(net, (din,)), net, Settings(timeout=120, max_domains=20_000, split=split))
            p = Problem(x0 - eps, x0 + eps, C, torch.zeros(2), groups=torch.zeros(2, dtype=torch.long))
            got = v.verify(p)
            if got.status == TIMEOUT:
                continue
            decided += 1
            assert got.status == truth, (seed, eps, got)
            if got.status == FALSIFIED:  # both atoms <= 0 at the counterexample
                assert ((got.counterexample - x0).abs() <= eps + 1e-6).all()
                assert (net(got.counterexample[None]) @ C.T).max() <= 0
    assert decided >= 3
