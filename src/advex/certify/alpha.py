"""alpha-CROWN with every bound optimised (Xu et al. 2021, "Fast and Complete", section 3.1).

CROWN relaxes each unstable ReLU below by alpha z, alpha in [0, 1]; any alpha is sound, so the
slopes are free variables. Today's final-layer alpha-CROWN (:func:`advex.certify.bounds.spec_bounds`)
optimises the slopes used by the final back-substitution only; the intermediate bounds (every
ReLU's pre-activation bounds, which fix the upper lines and decide which neurons are unstable)
stay CROWN's. Here every back-substitution has its own slopes: the bounds on the input of ReLU
r are computed with slopes ``alpha[r][j]`` for every ReLU j below r, one per (bounded neuron,
neuron of j), and the final specs with ``alpha[out][j]``. All of them are raised together by
Adam on the final bound, the gradient reaching an intermediate layer's slopes through the
relaxations its bounds define above it. Each step's intermediate bounds are intersected with
the tightest seen so far (each was a sound bound), the gradient passing straight through to
the new bound (as auto_LiRPA does with its reference bounds: a plain maximum would stop the
slopes wherever an earlier step was tighter), and the best final bound is kept, so the result
is never looser than CROWN's.

A convolutional neuron's bound is back-substituted as patches (its receptive field only, as
CROWN does here), with its slopes on its window; other intermediate bounds are dense
(coefficients (B, S, *layer shape)). One slope per (bounded neuron, ReLU neuron) is the price;
:func:`memory` estimates it so callers can split a batch or fall back to final-layer slopes.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

from advex.certify.bounds import (
    InputSet,
    PreBounds,
    _patch_size,
    backsub,
    conv_chain,
    crown_bound,
    patch_bounds,
)
from advex.certify.layers import Layer, relu_relaxation
from advex.errors import AdvexWarning


def ancestors(nodes: list[Layer], p: int) -> set[int]:
    """The layers whose output layer p's output depends on (p excluded)."""
    seen, stack = set(), list(nodes[p].inputs)
    while stack:
        j = stack.pop()
        if j not in seen:
            seen.add(j)
            stack.extend(nodes[j].inputs)
    return seen


@dataclass
class Plan:
    """What one optimisation back-substitutes: for each ReLU r whose input bounds depend on a
    ReLU below, the unstable neurons it tightens (``idx`` (B, U) flat indices into its input,
    ``valid`` (B, U) where a row has fewer) and the ReLUs below it (``below[r]``); ``out`` keys
    the final specs' back-substitution (:func:`final_key`) and ``below[out]`` every ReLU it passes."""

    idx: dict[int, torch.Tensor]
    valid: dict[int, torch.Tensor]
    below: dict[int, list[int]]
    out: int
    chains: dict[int, list[int]]  # the starts bounded as patches: the layers down to the input


def final_key(nodes: list[Layer]) -> int:
    """The key of the final specs' slopes (``Plan.out``): one past the last layer, apart from
    every layer's own (the last layer may be a ReLU, bounded as an intermediate one too)."""
    return len(nodes)


def make_plan(nodes: list[Layer], pre: PreBounds) -> Plan:
    relus = [j for j, n in enumerate(nodes) if n.relaxed]
    idx, valid, below, chains = {}, {}, {}, {}
    for r in relus:
        p = nodes[r].inputs[0]
        under = sorted(ancestors(nodes, p) & set(relus))
        if not under:
            continue  # an affine function of the input: CROWN's bound is exact for a box, nothing to optimise
        lo, hi = (t.flatten(1) for t in pre[r])
        unstable = (lo < 0) & (hi > 0)
        counts = unstable.sum(1)
        u = int(counts.max()) if counts.numel() else 0
        if u == 0:
            continue
        idx[r] = torch.argsort((~unstable).to(torch.int8), dim=1, stable=True)[:, :u]
        valid[r] = torch.arange(u, device=lo.device)[None] < counts[:, None]
        below[r] = under
        chain = conv_chain(nodes, p)
        if chain is not None:
            chains[r] = chain
    out, last = final_key(nodes), len(nodes) - 1
    below[out] = sorted((ancestors(nodes, last) | {last}) & set(relus))
    return Plan(idx, valid, below, out, chains)


def memory(nodes: list[Layer], plan: Plan, specs: int) -> int:
    """Bytes of the slopes, their gradients and Adam's two moments, and the largest dense
    coefficient tensor of one back-substitution."""
    numel = {j: int(torch.Size(nodes[j].shape).numel()) for j in range(len(nodes))}
    widest = max(numel.values())
    total, coef = 0, 0
    for r, under in plan.below.items():
        s = specs if r == plan.out else 2 * plan.idx[r].shape[1]
        b = plan.idx[r].shape[0] if r in plan.idx else 1
        if r in plan.chains:
            size = _patch_size(nodes, plan.chains[r])
            total += 4 * b * s * size * len(under)
            coef = max(coef, b * s * size)
        else:
            total += 4 * b * s * sum(numel[j] for j in under)
            coef = max(coef, b * s * widest)
    return 4 * (total + 3 * coef)


def init_slopes(pre: PreBounds, plan: Plan, specs: int, slope: str = "crown") -> dict[int, dict[int, torch.Tensor]]:
    """The slopes every back-substitution starts from: the slope rule's (CROWN's adaptive
    choice). Those of patch starts are filled on their first pass (their windows' geometry)."""
    start = {j: relu_relaxation(lo, hi, slope).lower_slope.clamp(0, 1) for j, (lo, hi) in pre.items()}
    alphas = {}
    for r, under in plan.below.items():
        if r in plan.chains:
            alphas[r] = {}
            continue
        s = specs if r == plan.out else 2 * plan.idx[r].shape[1]
        alphas[r] = {j: start[j].unsqueeze(1).expand(-1, s, *start[j].shape[1:]).clone() for j in under}
    return alphas


def intermediate(
    nodes: list[Layer],
    inp: InputSet,
    best: PreBounds,
    plan: Plan,
    alphas,
    slope: str = "crown",
    fix=None,
    above: int = 0,
) -> PreBounds:
    """Every ReLU's input bounds, layer by layer: those of the plan back-substituted with their
    own slopes (differentiably) and intersected with ``best``; the others ``best`` as they are.
    ``fix(r, lo, hi)`` tightens each with what the caller knows (branch and bound's splits);
    ``above``: only ReLUs after this layer are back-substituted (the others keep ``best``)."""
    pre: PreBounds = {}
    for r in sorted(best):
        lo, hi = best[r]
        if r in plan.idx and r > above:
            p = nodes[r].inputs[0]
            idx, ok = plan.idx[r], plan.valid[r]
            bsz, u = idx.shape
            if r in plan.chains:  # as patches, each neuron's slopes on its window
                got_l, got_u = patch_bounds(nodes, plan.chains[r], p, idx, inp, pre, "crown", alphas[r])
            else:
                eye = torch.zeros(bsz, u, lo[0].numel(), device=lo.device, dtype=lo.dtype)
                eye.scatter_(2, idx.unsqueeze(-1), 1.0)
                A = torch.cat([eye, -eye], 1).reshape(bsz, 2 * u, *nodes[p].shape)
                a_in, bias = backsub(nodes, p, A, pre, slope, alphas[r])
                bound = inp.concretize(a_in, bias)
                got_l, got_u = bound[:, :u], -bound[:, u:]
            flat_l, flat_u = lo.flatten(1), hi.flatten(1)
            cur_l, cur_u = flat_l.gather(1, idx), flat_u.gather(1, idx)
            # the tighter of the two values, with the new bound's gradient (straight through): a
            # plain max would cut the slopes off wherever an earlier step was tighter
            new_l = torch.where(ok, got_l + (torch.maximum(cur_l, got_l) - got_l).detach(), cur_l)
            new_u = torch.where(ok, got_u + (torch.minimum(cur_u, got_u) - got_u).detach(), cur_u)
            lo = flat_l.scatter(1, idx, new_l).view_as(lo)
            hi = flat_u.scatter(1, idx, new_u).view_as(hi)
        pre[r] = (lo, hi) if fix is None else fix(r, lo, hi)
    return pre


def clamp_(alphas) -> None:
    with torch.no_grad():
        for per in alphas.values():
            for a in per.values():
                a.clamp_(0, 1)


@dataclass
class Optimised:
    """What :func:`alpha_crown` found: the lower bounds (B, S), the tightest intermediate bounds,
    the slopes of every back-substitution (start -> ReLU -> slopes) and the plan they follow."""

    lower: torch.Tensor
    pre: PreBounds
    alphas: dict[int, dict[int, torch.Tensor]]
    plan: Plan | None


MEMORY = 3 << 30  # bytes the slopes of one optimisation may take before a batch is split
# On a CPU a batch is split sooner: smaller batches keep their tensors in memory the allocator
# reuses instead of pages mapped fresh and faulted in on every step (mnist-small-pgd at 0.1, 50
# images: 13.5-14.4 s with 128 or 256 MB, 18.7-21.0 s with 512 MB, 10-11 s of it the kernel's;
# same bounds; docs/benchmarks.md). One input is still bounded in full up to ``budget``.
CPU_BATCH_MEMORY = 1 << 27


def adam(params, **kw) -> torch.optim.Adam:
    """Adam, its step fused into one kernel where torch has one for these tensors (about 9x
    faster a step than the per-tensor loop on CPU for alpha-CROWN's slopes)."""
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, **kw)


def alpha_crown(
    nodes: list[Layer],
    inp: InputSet,
    C: torch.Tensor,
    *,
    steps: int = 20,
    lr: float = 0.1,
    slope: str = "crown",
    intersect_ibp: bool = True,
    intermediate_slopes: bool = True,
    budget: int = MEMORY,
    skip_proven: bool = False,
    deadline: float | None = None,
) -> Optimised:
    """Lower bounds (B, S) of C z over the input set with every back-substitution's slopes
    optimised (see the module's docstring), and the tightest intermediate bounds found.
    ``intermediate_slopes=False``: the final back-substitution's slopes only. A batch whose
    slopes would take more than ``budget`` bytes (on a CPU, ``CPU_BATCH_MEMORY``) is bounded in
    halves; one input that alone would take more than ``budget`` is bounded with final-layer
    slopes (a warning says so). ``skip_proven``: inputs whose every CROWN bound
    is already > 0 are not optimised (their bounds stay CROWN's; certification needs no more).
    ``deadline`` (a ``time.perf_counter()`` value): the optimisation stops there, with the best
    bounds found so far."""
    best, pre, _ = crown_bound(nodes, inp, C, slope, intersect_ibp)
    k = len(nodes) - 1
    if steps <= 0 or not pre:
        return Optimised(best, pre, {}, None)
    if skip_proven:
        rows = (best <= 0).any(1)
        if not rows.all():
            if rows.any():
                sub = alpha_crown(nodes, _rows(inp, rows), C[rows], steps=steps, lr=lr, slope=slope,
                                  intersect_ibp=intersect_ibp, intermediate_slopes=intermediate_slopes,
                                  budget=budget)  # fmt: skip
                best[rows] = sub.lower
                for j, (lo, hi) in sub.pre.items():
                    pre[j][0][rows], pre[j][1][rows] = lo, hi
            return Optimised(best, pre, {}, None)
    plan = make_plan(nodes, pre)
    if not intermediate_slopes:
        plan = Plan({}, {}, {plan.out: plan.below[plan.out]}, plan.out, {})
    else:
        need, b = memory(nodes, plan, C.shape[1]), inp.x.shape[0]
        if b > 1 and need > _split_at(inp, budget):  # in halves, each its own optimisation
            parts = [alpha_crown(nodes, _rows(inp, sl), C[sl], steps=steps, lr=lr, slope=slope,
                                 intersect_ibp=intersect_ibp, budget=budget, deadline=deadline)
                     for sl in (slice(0, b // 2), slice(b // 2, b))]  # fmt: skip
            pre_ = {j: tuple(torch.cat([q.pre[j][i] for q in parts]) for i in (0, 1)) for j in parts[0].pre}
            return Optimised(torch.cat([q.lower for q in parts]), pre_, {}, None)
        if need > budget:  # one input alone would: its final layer's slopes only
            warnings.warn(
                f"alpha-CROWN's slopes for every intermediate bound of this network would take "
                f"{need / 2**30:.1f} GB; the final layer's only are optimised",
                AdvexWarning,
                stacklevel=2,
            )
            plan = Plan({}, {}, {plan.out: plan.below[plan.out]}, plan.out, {})
    alphas = init_slopes(pre, plan, C.shape[1], slope)
    best_pre = {j: (lo.detach(), hi.detach()) for j, (lo, hi) in pre.items()}
    with torch.no_grad():  # the patch starts' slopes take their windows' shapes
        intermediate(nodes, inp, best_pre, plan, alphas, slope)
    params = [a.requires_grad_() for per in alphas.values() for a in per.values()]
    if not params:  # no ReLU reaches the output: nothing to optimise
        return Optimised(best, pre, {}, None)
    opt = adam(params, lr=lr)
    for step in range(steps + 1):
        last = step == steps or (deadline is not None and time.perf_counter() > deadline)
        with torch.set_grad_enabled(not last):  # callers may hold no_grad
            cur = intermediate(nodes, inp, best_pre, plan, alphas, slope)
            a_in, bias = backsub(nodes, k, C, cur, slope, alphas[plan.out])
            lb = inp.concretize(a_in, bias)
            if not last:
                opt.zero_grad(set_to_none=True)
                (-lb.sum()).backward()
        if not last:
            opt.step()
            clamp_(alphas)
        with torch.no_grad():
            best = torch.maximum(best, lb.detach())
            best_pre = {j: (torch.maximum(best_pre[j][0], lo.detach()), torch.minimum(best_pre[j][1], hi.detach()))
                        for j, (lo, hi) in cur.items()}  # fmt: skip
        if last:
            break
    slopes = {r: {j: a.detach() for j, a in per.items()} for r, per in alphas.items()}
    return Optimised(best, best_pre, slopes, plan)


def _split_at(inp: InputSet, budget: int) -> int:
    """Bytes of slopes above which a batch is bounded in halves: ``budget``, and on a CPU at
    most ``CPU_BATCH_MEMORY``."""
    return min(budget, CPU_BATCH_MEMORY) if inp.x.device.type == "cpu" else budget


def _rows(inp: InputSet, sl: slice) -> InputSet:
    return InputSet(inp.x[sl], inp.eps, inp.norm, inp.lower[sl], inp.upper[sl])
