"""Complete verification by branch and bound (BaB): every problem ends verified, falsified
(with a counterexample the network gets wrong) or timed out.

A problem is an input box and specifications C z + d (S of them, z the logits): the property
holds when every one is > 0 at every point of the box (for robustness, the margins z_y - z_j
over the clipped L-inf ball). Specifications may be grouped (a VNNLIB conjunction: the
network is unsafe where *all* of a group's atoms are <= 0); the property then holds when, at
every point, each group has one spec > 0, proven in a domain when the largest of a group's
lower bounds is > 0. A *domain* is a part of the box: the whole box with some
unstable ReLUs fixed active (z >= 0) or inactive (z <= 0) (ReLU splitting), or a smaller box
(input splitting, for low-dimensional inputs), and, past the root, one group of specs: the
property holds when each group is proven over the whole box, so each group the root leaves
open is searched on its own, split where its own bound is loose (alpha-beta-CROWN's one
search per class; a joint search must refine the box until every group is proven in every
part). Each round takes the open domains with the lowest bounds, splits each in two, and
bounds all the children in one batched pass:

- intermediate bounds: the root's (alpha-CROWN with optimised intermediate slopes) clamped
  by the domain's splits (a split neuron is linear in its domain), as alpha-beta-CROWN keeps
  them; ``intermediate=True`` recomputes them by CROWN in each domain above its split, within
  its parent's (tighter, but it costs more than the domains it saves on the zoo's MNIST nets);
  for input splitting, CROWN in each smaller box; a neuron whose bounds cross (lower > upper)
  shows the domain is empty, so it is verified;
- the final bound by alpha-CROWN with beta-CROWN's split multipliers (Wang et al. 2021): for a
  split s z_i >= 0 (s = +1 active, -1 inactive) the bound of f - beta s z_i, beta >= 0, is a
  lower bound of f over the domain; alpha and beta are raised together by Adam, warm-started
  from the parent; a child's bound is never below its parent's (the better is kept);
- the split chosen by a BaBSR-style score (Bunel et al. 2020): the intercept each unstable
  ReLU's upper line adds to the failing bounds, weighted by its coefficient there; input
  splitting halves the box's widest side (as alpha-beta-CROWN does on ACAS Xu: width times
  coefficient, ``input_branching="sensitivity"``, needed 400x more boxes there, the
  coefficient saying little about where the ReLUs' relaxations are loose);
- an attack in the branches: the point of the box where each child's linear bound is lowest
  is evaluated, and projected gradient steps from the most promising children search for a
  counterexample; every counterexample is re-checked by a fresh fp32 pass of the network.

This module knows the traced layers (:mod:`advex.certify.layers`) and the bound routines of
:mod:`advex.certify.bounds`; :func:`advex.certify.certify` with ``method="bab"`` drives it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from advex.certify.alpha import Plan, adam, alpha_crown, final_key, intermediate
from advex.certify.bounds import InputSet, backsub, crown_intermediate, fixed_relaxations
from advex.certify.layers import Layer, relu_relaxation
from advex.errors import AdvexError

VERIFIED, FALSIFIED, TIMEOUT = "verified", "falsified", "timeout"
SPLITS = ("auto", "relu", "input")
BRANCHING = ("fsb", "babsr")
INPUT_BRANCHING = ("widest", "sensitivity")
# "auto" splits the input box when it has at most this many dimensions and the network more
# ReLUs than this (the ACAS Xu regime); ReLU splitting with beta-CROWN otherwise
_INPUT_SPLIT_DIMS, _INPUT_SPLIT_RELUS = 16, 200
_INPUT_BATCH = 16  # input-split domains are cheap: this many times ``batch`` per round


@dataclass
class Problem:
    """One verification problem: the box [lower, upper] (1, *input shape) and specs C (S, K),
    d (S,); it holds when C z + d > 0 for every z the network gives inside the box."""

    lower: torch.Tensor
    upper: torch.Tensor
    C: torch.Tensor
    d: torch.Tensor
    groups: torch.Tensor | None = None  # (S,) group of each spec, 0 .. G-1; None: each its own

    def __post_init__(self):
        self._mask = None
        if self.groups is not None:
            g = self.groups.to(device=self.C.device, dtype=torch.long)
            self._mask = torch.arange(int(g.max()) + 1, device=g.device).unsqueeze(1) == g  # (G, S)

    def worst(self, v: torch.Tensor) -> torch.Tensor:
        """(N,) from spec values or lower bounds v (N, S): the smallest, over groups, of a
        group's largest; the property fails (or is not yet proven) where it is <= 0."""
        if self._mask is None:
            return v.min(1).values
        return v.unsqueeze(1).masked_fill(~self._mask, float("-inf")).amax(-1).min(1).values

    def restrict(self, keep: torch.Tensor) -> Problem:
        """The problem over the specs ``keep`` (S,) bool only, whole groups kept (where every
        other group is proven, its counterexamples are the whole problem's)."""
        groups = None
        if self.groups is not None:
            g = self.groups.to(dtype=torch.long)[keep.to(self.groups.device)]
            groups = torch.unique(g, return_inverse=True)[1]
        return Problem(self.lower, self.upper, self.C[keep], self.d[keep], groups)

    def failing(self, v: torch.Tensor) -> torch.Tensor:
        """(N, S) bool: the specs of the groups not yet > 0 (what a split should help)."""
        if self._mask is None:
            return v <= 0
        gmax = v.unsqueeze(1).masked_fill(~self._mask, float("-inf")).amax(-1)  # (N, G)
        return ((gmax <= 0).unsqueeze(-1) & self._mask).any(1)


@dataclass
class Outcome:
    """How one problem ended: ``status`` (verified / falsified / timeout), the counterexample
    (a point of the box, re-checked) when falsified, the domains bounded, the seconds spent and
    the lowest lower bound of the open domains when it stopped (+inf when verified)."""

    status: str
    counterexample: torch.Tensor | None
    domains: int
    time_s: float
    lower_bound: float
    rounds: int = 0
    reason: str = ""


@dataclass
class Settings:
    timeout: float = 60.0
    batch: int = 64  # domains split per round (twice as many children bounded)
    split: str = "auto"
    steps: int = 10  # alpha/beta Adam steps per round
    first_steps: int = 30  # for the root
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    attack_steps: int = 20
    attack_every: int = 1  # rounds between attacks from the most promising children
    square_queries: int = 5000  # certify: the Square attack on what alpha-CROWN and PGD leave open (0: none)
    intermediate: bool = False  # recompute intermediate bounds in every domain (off: the root's, clamped by the splits)
    max_domains: int = 1_000_000  # domains bounded in all before giving up (a budget that does not depend on speed)
    memory: int = 2 << 30  # bytes the open domains may hold
    branching: str = "fsb"  # "babsr": its scores alone; "fsb": the best of its top candidates, tried
    candidates: int = 3  # fsb: candidates tried per domain
    input_branching: str = "widest"  # input splitting: "widest" side, or "sensitivity" (width x |coefficient|)
    separate_groups: bool = True  # a domain per (part of the box, open group), each split for its own group


@dataclass
class _Domains:
    """A batch of domains of one problem (D of them)."""

    lower: torch.Tensor  # (D, *in) input box
    upper: torch.Tensor
    lb: torch.Tensor  # (D, S) best lower bounds of the specs
    splits: dict[int, torch.Tensor] = field(default_factory=dict)  # ReLU -> int8 (D, *shape): 0, +1, -1
    pre: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    alphas: dict[int, torch.Tensor] = field(default_factory=dict)  # ReLU -> (D, S, *shape)
    betas: dict[int, torch.Tensor] = field(default_factory=dict)
    choice: torch.Tensor | None = None  # (D,) the flat neuron (or input dimension) to split next
    # (D, m): a domain of one group's search (``Settings.separate_groups``): the specs of its
    # group (padded by repeating the first), the only ones its alphas and betas (D, m, ...) hold
    own: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.lower.shape[0]

    def _map(self, f) -> _Domains:
        def each(d):
            return {k: f(v) for k, v in d.items()}

        return _Domains(
            f(self.lower), f(self.upper), f(self.lb), each(self.splits),
            {k: (f(a), f(b)) for k, (a, b) in self.pre.items()}, each(self.alphas), each(self.betas),
            None if self.choice is None else f(self.choice), None if self.own is None else f(self.own),
        )  # fmt: skip

    def _flat(self) -> dict[str, torch.Tensor]:
        """Every tensor by a name (domains of one search share the names)."""
        ts = {"lower": self.lower, "upper": self.upper, "lb": self.lb}
        for name in ("splits", "alphas", "betas"):
            ts.update({f"{name}{k}": t for k, t in getattr(self, name).items()})
        ts.update({f"pre{k}.{i}": t for k, p in self.pre.items() for i, t in enumerate(p)})
        ts.update({k: t for k, t in (("choice", self.choice), ("own", self.own)) if t is not None})
        return ts

    def take(self, idx: torch.Tensor) -> _Domains:
        return self._map(lambda t: t[idx])

    def specs(self, keep: torch.Tensor) -> _Domains:
        """The domains over the specs ``keep`` (S,) bool only (see :meth:`Problem.restrict`)."""
        assert self.own is None, "restrict a problem before splitting it by group"
        out = _Domains(self.lower, self.upper, self.lb[:, keep], self.splits, self.pre,
                       {j: a[:, keep] for j, a in self.alphas.items()},
                       {j: b[:, keep] for j, b in self.betas.items()})  # fmt: skip
        out.choice = self.choice
        return out

    def nbytes(self) -> int:
        ts = [self.lower, self.upper, self.lb, *self.splits.values(), *self.alphas.values(), *self.betas.values()]
        ts += [t for p in self.pre.values() for t in p]
        return sum(t.numel() * t.element_size() for t in ts)

    @staticmethod
    def cat(parts: list[_Domains]) -> _Domains:
        parts = [p for p in parts if len(p)]
        first = parts[0]

        def join(key):
            return {k: torch.cat([getattr(p, key)[k] for p in parts]) for k in getattr(first, key)}

        return _Domains(
            torch.cat([p.lower for p in parts]), torch.cat([p.upper for p in parts]),
            torch.cat([p.lb for p in parts]), join("splits"),
            {k: (torch.cat([p.pre[k][0] for p in parts]), torch.cat([p.pre[k][1] for p in parts]))
             for k in first.pre},
            join("alphas"), join("betas"),
            None if first.choice is None else torch.cat([p.choice for p in parts]),
            None if first.own is None else torch.cat([p.own for p in parts]),
        )  # fmt: skip


class _Pool:
    """The open domains in buffers with room to grow, so that taking the weakest and adding the
    children of a round touch those rows only (copying the whole pool each round cost as much
    as bounding once the pool held a few thousand domains). ``limit``: bytes the buffers grow to
    at most while the domains fit in them (the search's memory budget)."""

    def __init__(self, limit: int | None = None):
        self.buf: _Domains | None = None
        self.n = 0
        self.limit = limit

    def __len__(self) -> int:
        return self.n

    @property
    def lb(self) -> torch.Tensor:
        return self.buf.lb[: self.n]

    def nbytes(self) -> int:
        """Bytes of the domains held (the rows in use, not the room to grow)."""
        return 0 if self.buf is None else self.buf.nbytes() * self.n // max(len(self.buf), 1)

    def add(self, dom: _Domains) -> None:
        if not len(dom):
            return
        if self.buf is None or self.n + len(dom) > len(self.buf):
            need = self.n + len(dom)
            cap = need + max(self.n // 2, len(dom))  # grows by half, within the limit while it can
            if self.limit is not None:
                cap = max(need, min(cap, self.limit // max(dom.nbytes() // len(dom), 1)))
            grown = dom._map(lambda t: t.new_empty((cap, *t.shape[1:])))
            if self.n:
                old = self.buf._flat()
                for name, t in grown._flat().items():
                    t[: self.n] = old[name][: self.n]
            self.buf = grown
        theirs = dom._flat()
        for name, t in self.buf._flat().items():
            t[self.n : self.n + len(dom)] = theirs[name]
        self.n += len(dom)

    def pop(self, idx: torch.Tensor) -> _Domains:
        """The domains at ``idx`` (distinct rows), removed: the last rows move into their places."""
        out = self.buf.take(idx)
        m = self.n - len(idx)
        gone = torch.zeros(self.n, dtype=torch.bool, device=idx.device)
        gone[idx] = True
        holes = gone[:m].nonzero().flatten()
        movers = (~gone[m:]).nonzero().flatten() + m
        if len(holes):
            for t in self.buf._flat().values():
                t[holes] = t[movers]
        self.n = m
        return out


def check_settings(s: Settings) -> None:
    if not isinstance(s.timeout, (int, float)) or not s.timeout > 0:
        raise AdvexError(f"timeout must be a number of seconds > 0, got {s.timeout!r}")
    if s.split not in SPLITS:
        raise AdvexError(f"unknown split {s.split!r}; use one of {', '.join(SPLITS)}")
    if s.batch < 1:
        raise AdvexError(f"the branch batch must be >= 1, got {s.batch}")
    if s.branching not in BRANCHING:
        raise AdvexError(f"unknown branching {s.branching!r}; use one of {', '.join(BRANCHING)}")
    if s.input_branching not in INPUT_BRANCHING:
        raise AdvexError(f"unknown input branching {s.input_branching!r}; use one of {', '.join(INPUT_BRANCHING)}")
    if s.candidates < 1:
        raise AdvexError(f"fsb needs at least one candidate per domain, got {s.candidates}")


def _open_specs(failing: torch.Tensor) -> torch.Tensor:
    """(D, S') the indices of each domain's failing specs (D, S) bool, first; S' the most any
    domain has (at least one), rows with fewer padded with proven specs (bounded again: sound)."""
    width = max(int(failing.sum(1).max()), 1) if failing.numel() else 1
    return torch.argsort((~failing).to(torch.int8), dim=1, stable=True)[:, :width]


def _specs(t: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """The rows ``sel`` (D, S') of the spec dimension of t (D, S, *shape)."""
    return t.gather(1, sel.view(*sel.shape, *[1] * (t.dim() - 2)).expand(*sel.shape, *t.shape[2:]))


def _put_specs(full: torch.Tensor, sel: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """``full`` (D, S, *shape) with its rows ``sel`` (D, S') replaced by ``part`` (a new tensor)."""
    return full.scatter(1, sel.view(*sel.shape, *[1] * (full.dim() - 2)).expand_as(part), part)


def relu_indices(nodes: list[Layer]) -> list[int]:
    return [j for j, n in enumerate(nodes) if n.relaxed]


class Verifier:
    """Branch and bound over one traced network; ``forward`` is the network itself (the
    counterexamples' check)."""

    def __init__(self, nodes: list[Layer], forward, settings: Settings):
        check_settings(settings)
        self.nodes, self.forward, self.s = nodes, forward, settings
        self.relus = relu_indices(nodes)
        self.sizes = [int(torch.Size(nodes[j].shape).numel()) for j in self.relus]
        self.input_split = False
        self.deadline = float("inf")  # the optimisations stop early past it (their bounds so far are sound)
        self.plan: Plan | None = None  # the root's: which neurons each intermediate bound tightens
        self.shared: dict[int, dict[int, torch.Tensor]] = {}  # the root's optimised intermediate slopes
        self.root_pre: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # the root's ReLU bounds

    # ------------------------------------------------------------------ the spec
    def values(self, x: torch.Tensor, p: Problem) -> torch.Tensor:
        """C z + d (N, S) at the points x (N, *in), in fp32."""
        with torch.no_grad():
            z = self.forward(x.float()).float()
        return z @ p.C.T.float() + p.d.float()

    def _recheck(self, x: torch.Tensor, p: Problem) -> torch.Tensor | None:
        """x (N, *in) clamped into the box: the first whose spec fails in a fresh pass, else None."""
        x = torch.maximum(torch.minimum(x, p.upper), p.lower)
        bad = p.worst(self.values(x, p)) <= 0
        return x[bad.nonzero()[0, 0]].clone() if bad.any() else None

    # ------------------------------------------------------------------ attack
    def attack(self, starts: torch.Tensor, p: Problem, steps: int) -> torch.Tensor | None:
        """Signed-gradient descent on the smallest spec value from each start, inside the box."""
        lo, hi = p.lower, p.upper
        width = (hi - lo).clamp_min(0)
        x = starts.clone()
        for t in range(steps):
            x.requires_grad_(True)
            with torch.enable_grad():
                v = self.forward(x) @ p.C.T + p.d
                (g,) = torch.autograd.grad(p.worst(v).sum(), x)
            with torch.no_grad():
                bad = p.worst(v.detach()) <= 0  # the step's own pass finds them; a fresh one confirms
                found = self._recheck(x.detach()[bad], p) if bad.any() else None
                if found is not None:
                    return found
                if time.perf_counter() > self.deadline:
                    break  # out of time: the last point is still checked
                step = width * (0.25 * (1 - t / steps) + 0.01)
                x = torch.maximum(torch.minimum(x.detach() - step * g.sign(), hi), lo)
        return self._recheck(x.detach(), p)

    def pgd(self, p: Problem, restarts: int = 5, steps: int = 50, seed: int = 0) -> torch.Tensor | None:
        gen = torch.Generator(p.lower.device).manual_seed(seed)
        u = torch.rand((restarts, *p.lower.shape[1:]), generator=gen, device=p.lower.device)
        starts = torch.cat([(p.lower + p.upper) / 2, p.lower + u * (p.upper - p.lower)])
        return self.attack(starts, p, steps)

    # ------------------------------------------------------------------ bounding
    def _fix(self, dom: _Domains):
        """The ``fix`` hook of crown_intermediate: a ReLU's bounds intersected with the parent's
        and clamped by the domain's splits."""

        def fix(r, lo, hi):
            if r in dom.pre:
                plo, phi = dom.pre[r]
                lo, hi = torch.maximum(lo, plo), torch.minimum(hi, phi)
            if r in dom.splits:
                sp = dom.splits[r]
                lo = torch.where(sp > 0, lo.clamp_min(0), lo)
                hi = torch.where(sp < 0, hi.clamp_max(0), hi)
            return lo, hi

        return fix

    def bound(self, dom: _Domains, p: Problem, steps: int) -> tuple[_Domains, torch.Tensor]:
        """Bound every domain of ``dom``: its new lower bounds (never below the parent's), its
        bounds and slopes for its children, and the split each should take next. Only the specs
        each domain has not yet proven are bounded (a proven spec stays proven in every part of
        the domain: its parent's bound holds there); the others keep their parent's bounds.
        Returns the bounded domains and the input points (D, *in) where each one's weakest bound
        is lowest."""
        nd = len(dom)
        inp = InputSet((dom.lower + dom.upper) / 2, 0.0, "linf", dom.lower, dom.upper)
        own = dom.own is not None  # alphas and betas hold the specs ``dom.own``, and those are bounded
        sel = dom.own if own else _open_specs(p.failing(dom.lb))  # (D, S'): the specs to bound in each domain
        C = p.C.to(dom.lower)[sel]
        d = p.d.to(dom.lower)[sel]
        fix = self._fix(dom)
        with torch.no_grad():
            if self.input_split or not (dom.pre or self.root_pre):  # a new box: CROWN, within the parent's bounds
                _, pre = crown_intermediate(self.nodes, inp, "crown", fix=fix)
            elif self.s.intermediate and self.plan is not None:  # above the split, with the root's slopes
                pre = self._above_splits(dom, inp)
            else:  # the parent's bounds (or the root's, which are the same), clamped by the splits
                pre = {r: fix(r, lo.expand(nd, *lo.shape[1:]), hi.expand(nd, *hi.shape[1:]))
                       for r, (lo, hi) in (dom.pre or self.root_pre).items()}  # fmt: skip
        empty = torch.zeros(nd, dtype=torch.bool, device=dom.lower.device)
        for lo, hi in pre.values():  # bounds that cross by more than rounding: no point in the domain
            empty |= (lo > hi + 1e-5 * (1 + lo.abs() + hi.abs())).flatten(1).any(1)
        s = sel.shape[1] if own else p.C.shape[0]

        def pick(full):
            return full if own else _specs(full, sel)

        full_a, full_b, alphas, betas = {}, {}, {}, {}
        for j, (lo, hi) in pre.items():
            full = dom.alphas.get(j)
            if full is None:
                full = relu_relaxation(lo, hi, "crown").lower_slope.unsqueeze(1).expand(-1, s, *lo.shape[1:])
            full_a[j] = full
            alphas[j] = pick(full).clamp(0, 1).requires_grad_()
            if j in dom.splits:
                full = dom.betas.get(j)
                full_b[j] = torch.zeros_like(full_a[j]) if full is None else full
                betas[j] = pick(full_b[j]).requires_grad_()
        groups = [{"params": list(alphas.values()), "lr": self.s.lr_alpha},
                  {"params": list(betas.values()), "lr": self.s.lr_beta}]  # fmt: skip
        groups = [g for g in groups if g["params"]]
        opt = adam(groups) if groups and steps else None
        fixed = fixed_relaxations(pre)  # the bounds stay: only the slopes move
        best = dom.lb.gather(1, sel)
        k = len(self.nodes) - 1
        record: dict[int, torch.Tensor] = {}
        for step in range(steps + 1):
            last = step == steps or opt is None or time.perf_counter() > self.deadline  # bounds so far stand
            record.clear()
            with torch.set_grad_enabled(not last):
                extra = {j: -b * dom.splits[j].unsqueeze(1).to(b) for j, b in betas.items()}
                a_in, bias = backsub(self.nodes, k, C, pre, "crown", alphas, extra=extra, record=record, fixed=fixed)
                lb = inp.concretize(a_in, bias + d)
            if not last:
                opt.zero_grad(set_to_none=True)
                (-lb.clamp(max=1.0).sum()).backward()  # bounds well above 0 need no more
                opt.step()
                with torch.no_grad():
                    for a in alphas.values():
                        a.clamp_(0, 1)
                    for b in betas.values():
                        b.clamp_(min=0)
            best = torch.maximum(best, lb.detach())
            if last:
                break
        lb_all = dom.lb.scatter(1, sel, best)
        lb_all[empty] = float("inf")
        failing = p.failing(lb_all).gather(1, sel)
        if own:  # a group's padding repeats its first spec: count that one once
            failing[:, 1:] &= sel[:, 1:] != sel[:, :1]
        worst = torch.where(failing, best, torch.full_like(best, float("inf"))).argmin(1)
        a = a_in.detach()[torch.arange(nd), worst].view_as(dom.lower)
        corner = torch.where(a > 0, dom.lower, dom.upper)

        def put(full, t):
            return t.detach() if own else _put_specs(full, sel, t.detach())

        out = _Domains(dom.lower, dom.upper, lb_all, dom.splits, pre,
                       {j: put(full_a[j], t) for j, t in alphas.items()},
                       {j: put(full_b[j], t) for j, t in betas.items()}, own=dom.own)  # fmt: skip
        out.choice = self._choose(out, record, a_in.detach(), failing.to(best.dtype), p, inp, C, sel)
        return out, corner

    def _broadcast(self, nd: int) -> Plan:
        """The root's plan for ``nd`` domains (each ReLU's unstable neurons at the root: a
        superset of any domain's)."""
        pl = self.plan
        return Plan({r: t.expand(nd, -1) for r, t in pl.idx.items()},
                    {r: t.expand(nd, -1) for r, t in pl.valid.items()}, pl.below, pl.out, pl.chains)  # fmt: skip

    def _above_splits(self, dom: _Domains, inp: InputSet):
        """Each domain's ReLU bounds: those above the layer of its latest split recomputed with
        the root's slopes (within the parent's, clamped by the splits); those at or below it are
        the parent's, clamped (nothing below a split changes). Domains are grouped by that layer,
        so a split in the last ReLU layer costs no intermediate bound at all."""
        fix = self._fix(dom)
        pre = {r: fix(r, lo, hi) for r, (lo, hi) in dom.pre.items()}
        layer = torch.zeros(len(dom), dtype=torch.long, device=dom.lower.device)  # 0: recompute all
        if dom.choice is not None and self.relus:
            offsets = torch.tensor([0, *self.sizes], device=dom.choice.device).cumsum(0)
            at = torch.searchsorted(offsets, dom.choice.clamp_min(0), right=True) - 1
            layer = torch.tensor(self.relus, device=at.device)[at.clamp(0, len(self.relus) - 1)]
            layer = torch.where(dom.choice < 0, 0, layer)
        for above in layer.unique().tolist():
            if not any(r > above for r in self.plan.idx):
                continue  # nothing above this split is back-substituted
            rows = (layer == above).nonzero().flatten()
            sub = _Domains(dom.lower[rows], dom.upper[rows], dom.lb[rows], {j: t[rows] for j, t in dom.splits.items()},
                           {j: (lo[rows], hi[rows]) for j, (lo, hi) in dom.pre.items()})  # fmt: skip
            sub_inp = InputSet(inp.x[rows], 0.0, "linf", inp.lower[rows], inp.upper[rows])
            got = intermediate(self.nodes, sub_inp, sub.pre, self._broadcast(len(rows)), self.shared,
                               fix=self._fix(sub), above=above)  # fmt: skip
            for r in got:
                if r > above:
                    pre[r][0][rows], pre[r][1][rows] = got[r]
        return pre

    def root(self, p: Problem) -> _Domains:
        """The whole box bounded by alpha-CROWN with every bound's slopes optimised
        (:mod:`advex.certify.alpha`); its intermediate slopes serve every domain below it."""
        inp = InputSet((p.lower + p.upper) / 2, 0.0, "linf", p.lower, p.upper)
        C = p.C.to(p.lower).unsqueeze(0)
        opt = alpha_crown(self.nodes, inp, C, steps=self.s.first_steps, lr=self.s.lr_alpha,
                          intermediate_slopes=not self.input_split,
                          deadline=self.deadline)  # fmt: skip
        k = final_key(self.nodes)
        self.plan = opt.plan if opt.plan is not None and opt.plan.idx else None
        self.shared = {r: a for r, a in opt.alphas.items() if r != k}
        lb = opt.lower + p.d.to(opt.lower)
        return _Domains(p.lower, p.upper, lb, pre=opt.pre, alphas=dict(opt.alphas.get(k, {})))

    def _choose(self, dom: _Domains, record: dict[int, torch.Tensor], a_in: torch.Tensor, failing: torch.Tensor,
                p: Problem, inp: InputSet, C: torch.Tensor, sel: torch.Tensor):  # fmt: skip
        """The neuron (or input dimension) to split next in each domain; ``failing`` (D, S')
        marks which of the bounded specs ``sel`` (D, S'; coefficients C) a split should help.
        ReLUs: BaBSR's scores, and with ``branching="fsb"``
        the best of their top candidates tried (filtered smart branching)."""
        if self.input_split:
            width = (dom.upper - dom.lower).flatten(1)
            if self.s.input_branching == "widest":
                return width.argmax(1)
            w = (a_in.flatten(2).abs() * failing.unsqueeze(-1)).sum(1)
            return ((w + 1e-6) * width).argmax(1)
        scores = []
        for j in self.relus:
            lo, hi = (t.flatten(1) for t in dom.pre[j])
            unstable = (lo < 0) & (hi > 0)
            if j in dom.splits:
                unstable &= dom.splits[j].flatten(1) == 0
            a = record.get(j)
            a = torch.zeros_like(lo).unsqueeze(1) if a is None else a.flatten(2)
            weight = (a * failing.unsqueeze(-1)).sum(1)
            intercept = -lo * hi / (hi - lo).clamp_min(1e-12)
            score = weight.clamp(max=0).abs() * intercept + 1e-4 * weight.abs() * torch.minimum(-lo, hi)
            scores.append(torch.where(unstable, score + 1e-12, torch.full_like(score, -1.0)))
        scores = torch.cat(scores, 1)
        k = min(self.s.candidates, scores.shape[1]) if self.s.branching == "fsb" else 1
        top, cand = scores.topk(k, dim=1)
        if k > 1:
            tried = self._try_splits(dom, cand, p, inp, C, sel)  # (D, k): each candidate's weaker child
            pick = torch.where(top >= 0, tried, torch.full_like(tried, float("-inf"))).argmax(1)
            top, cand = top.gather(1, pick[:, None]), cand.gather(1, pick[:, None])
        return torch.where(top[:, 0] < 0, -1, cand[:, 0])  # -1: nothing left to split

    def _try_splits(self, dom: _Domains, cand: torch.Tensor, p: Problem, inp: InputSet, C: torch.Tensor,
                    sel: torch.Tensor):  # fmt: skip
        """Filtered smart branching (Bunel et al. 2020; De Palma et al. 2021): for the candidate
        neurons ``cand`` (D, k) of each domain, both children's bounds by one back-substitution
        with the domain's own slopes and multipliers (no optimisation, intermediate bounds kept,
        the split neuron made linear; the specs ``sel`` only, the others at the domain's
        bounds); returns the weaker child's value (D, k) of each."""
        nd, k = cand.shape
        m = 2 * k
        offsets = torch.tensor([0, *self.sizes], device=cand.device).cumsum(0)
        flat = cand.repeat_interleave(2, 1).flatten()  # (D * 2k,): row d * 2k + 2c + side
        active = torch.arange(nd * m, device=cand.device) % 2 == 0

        def rep(t):
            return t.repeat_interleave(m, 0)

        pre = {}
        for li, j in enumerate(self.relus):
            lo, hi = (rep(t).flatten(1).clone() for t in dom.pre[j])
            rows = ((flat >= offsets[li]) & (flat < offsets[li + 1])).nonzero().flatten()
            if len(rows):
                col = flat[rows] - offsets[li]
                on = active[rows]
                lo[rows[on], col[on]] = lo[rows[on], col[on]].clamp_min(0)
                hi[rows[~on], col[~on]] = hi[rows[~on], col[~on]].clamp_max(0)
            shape = dom.pre[j][0].shape[1:]
            pre[j] = (lo.view(-1, *shape), hi.view(-1, *shape))

        def pick(t):
            return rep(t if dom.own is not None else _specs(t, sel))

        alphas = {j: pick(a) for j, a in dom.alphas.items()}
        extra = {j: -pick(b) * rep(dom.splits[j]).unsqueeze(1).to(b) for j, b in dom.betas.items()}
        rin = InputSet(rep(inp.x), 0.0, "linf", rep(inp.lower), rep(inp.upper))
        with torch.no_grad():
            a_in, bias = backsub(self.nodes, len(self.nodes) - 1, rep(C), pre, "crown", alphas, extra=extra)
            lb = rin.concretize(a_in, bias + rep(p.d.to(bias)[sel]))
            parent = rep(dom.lb)
            lb = parent.scatter(1, rep(sel), torch.maximum(parent.gather(1, rep(sel)), lb))
        return p.worst(lb).view(nd, k, 2).amin(-1)

    @staticmethod
    def _per_group(dom: _Domains, p: Problem) -> _Domains:
        """The domains ``dom`` once per group of specs, the other groups' specs marked proven
        in each copy (+inf): the property holds where every group is proven over the whole box,
        so each group is searched on its own, split where its own bound is loose (as
        alpha-beta-CROWN splits a robustness property into one search per class)."""
        dev = dom.lb.device
        groups = torch.arange(len(p.C), device=dev) if p.groups is None else p.groups.to(dev).long()
        ng = int(groups.max()) + 1
        members = [(groups == g).nonzero().flatten() for g in range(ng)]
        m = max(len(ix) for ix in members)
        own = torch.stack([torch.cat([ix, ix[:1].expand(m - len(ix))]) for ix in members])  # (G, m)
        own = own.repeat_interleave(len(dom), 0)  # copy g: rows g*D .. (g+1)*D-1
        out = dom.take(torch.arange(len(dom), device=dev).repeat(ng))
        mine = torch.zeros_like(out.lb, dtype=torch.bool).scatter(1, own, True)
        out.lb = out.lb.masked_fill(~mine, float("inf"))
        out.alphas = {j: _specs(a, own) for j, a in out.alphas.items()}
        out.betas = {j: _specs(b, own) for j, b in out.betas.items()}
        out.own = own
        return out

    def _no_splits(self, dom: _Domains) -> _Domains:
        """``dom`` with an empty split record for every ReLU (what its children will have), so
        that domains split and not yet split share one layout in the pool."""
        for j in self.relus:
            if j not in dom.splits:
                dom.splits[j] = torch.zeros((len(dom), *self.nodes[j].shape), dtype=torch.int8, device=dom.lb.device)
        return dom

    def _children(self, dom: _Domains) -> _Domains:
        """Each domain split in two at its chosen neuron or input dimension."""
        kids = _Domains.cat([dom, dom])
        nd = len(dom)
        if self.input_split:
            lo, hi = kids.lower.flatten(1).clone(), kids.upper.flatten(1).clone()
            rows, dim = torch.arange(2 * nd), kids.choice
            mid = (lo[rows, dim] + hi[rows, dim]) / 2
            hi[rows[:nd], dim[:nd]] = mid[:nd]
            lo[rows[nd:], dim[nd:]] = mid[nd:]
            kids.lower, kids.upper = lo.view_as(kids.lower), hi.view_as(kids.upper)
            return kids  # a smaller box: its bounds recomputed within the parent's
        sign = torch.cat([torch.ones(nd), -torch.ones(nd)]).to(torch.int8).to(dom.lower.device)
        offsets = torch.tensor([0, *self.sizes], device=dom.lower.device).cumsum(0)
        for li, j in enumerate(self.relus):
            shape = self.nodes[j].shape
            sp = kids.splits.get(j)
            sp = torch.zeros((2 * nd, *shape), dtype=torch.int8, device=dom.lower.device) if sp is None else sp.clone()
            here = (kids.choice >= offsets[li]) & (kids.choice < offsets[li + 1])
            if here.any():
                flat = sp.view(2 * nd, -1)
                rows = here.nonzero().flatten()
                flat[rows, kids.choice[rows] - offsets[li]] = sign[rows]
            kids.splits[j] = sp
        return kids

    # ------------------------------------------------------------------ the search
    def verify(self, p: Problem) -> Outcome:
        t0 = time.perf_counter()
        s = self.s
        self.deadline = t0 + s.timeout
        numel = p.lower.numel()
        many = sum(self.sizes) > _INPUT_SPLIT_RELUS
        self.input_split = s.split == "input" or (s.split == "auto" and numel <= _INPUT_SPLIT_DIMS and many)
        if not self.relus:
            self.input_split = True  # a linear network: nothing to split but the box
        batch = s.batch * (_INPUT_BATCH if self.input_split else 1)

        def done(status, cex=None, lb=float("inf"), reason=""):
            return Outcome(status, cex, count, time.perf_counter() - t0, lb, rounds, reason)

        count, rounds = 0, 0
        cex = self._recheck(torch.cat([(p.lower + p.upper) / 2, p.lower, p.upper]), p)
        if cex is None:
            cex = self.pgd(p)
        if cex is not None:
            return done(FALSIFIED, cex, float("-inf"))
        t_root = time.perf_counter()
        root = self.root(p)
        self.root_pre = {} if self.input_split or self.s.intermediate else root.pre  # fixed: not stored per domain
        dom, corner = self.bound(root if self.input_split else self._no_splits(root), p, 0)
        count, round_s = 1, time.perf_counter() - t_root  # a first estimate of a round's time
        keep = p.failing(dom.lb).any(0)
        if not keep.all() and keep.any():  # the search needs, and stores, only what the root left open
            p, dom = p.restrict(keep), dom.specs(keep)
        if s.separate_groups and keep.any() and len(p.C) > 1:
            dom, corner = self.bound(self._per_group(dom, p), p, 0)
            count += len(dom)
        pool = _Pool(s.memory)
        while True:
            cex = self._recheck(corner, p)
            if cex is not None:
                return done(FALSIFIED, cex, float("-inf"))
            if self.root_pre:
                dom.pre = {}  # each domain's are the root's clamped by its splits
            pool.add(dom.take((p.worst(dom.lb) <= 0).nonzero().flatten()))  # the open ones
            if len(pool) == 0:
                return done(VERIFIED)
            worsts = p.worst(pool.lb)
            worst = float(worsts.min())
            if time.perf_counter() - t0 + round_s > s.timeout:  # the next round would overrun it
                return done(TIMEOUT, lb=worst, reason=f"{len(pool)} domains open after {s.timeout:g} s")
            if count >= s.max_domains:
                return done(TIMEOUT, lb=worst, reason=f"{len(pool)} domains open after bounding {count}")
            if pool.nbytes() > s.memory:
                return done(TIMEOUT, lb=worst, reason=f"{len(pool)} open domains fill the memory budget")
            parents = pool.pop(worsts.topk(min(batch, len(pool)), largest=False).indices)
            stuck = parents.choice < 0  # every unstable neuron split: bound again, with more steps
            kids = self._children(parents.take((~stuck).nonzero().flatten())) if (~stuck).any() else None
            if stuck.any():
                again = parents.take(stuck.nonzero().flatten())
                kids = again if kids is None else _Domains.cat([kids, again])
            t_round = time.perf_counter()
            dom, corner = self.bound(kids, p, s.steps if not stuck.any() else 3 * s.steps)
            count += len(kids)
            rounds += 1
            if s.attack_steps and rounds % s.attack_every == 0 and time.perf_counter() < self.deadline:
                promising = p.worst(dom.lb).argsort()[: max(1, s.batch // 8)]
                cex = self.attack(corner[promising], p, s.attack_steps)
                if cex is not None:
                    return done(FALSIFIED, cex, float("-inf"))
            round_s = time.perf_counter() - t_round
