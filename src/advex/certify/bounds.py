"""Bounds on a network's outputs over an input set: IBP, CROWN, alpha-CROWN.

- IBP (interval bound propagation; Gowal et al. 2019): boxes pushed layer by layer, a
  linear layer as centre +- |W| radius. About the cost of two forward passes.
- CROWN (Zhang et al. 2018): each output is bounded by a linear function of the input,
  found by back-substitution through the layers; an unstable ReLU (l < 0 < u) is relaxed
  above by the chord u (x - l) / (u - l) and below by alpha x. CROWN picks alpha = 1 if
  u > -l else 0; ``slope="wong-kolter"`` uses alpha = u / (u - l) (Fast-Lin; with these
  slopes the bound equals the dual bound of Wong & Kolter 2018). Pre-activation bounds of
  every ReLU come from the same back-substitution (for the neurons IBP finds unstable),
  intersected with IBP's.
- alpha-CROWN (Xu et al. 2021): the lower slopes optimised by projected gradient ascent
  (Adam) from CROWN's, those of every intermediate bound too (:mod:`advex.certify.alpha`,
  which builds on this module); never looser than CROWN (the best bound seen is kept).

Inputs: the L-inf ball clipped to [0, 1] (the box [max(x - eps, 0), min(x + eps, 1)]), or
the L2 ball (CROWN and alpha-CROWN: the tighter of the L2-ball bound and the clipped-box
bound, both sound). Specifications: a matrix C (B, S, K) turns the K logits into S linear
outputs (C z); margins y - j are folded into the last linear layer, as the papers do.

This module drives the rules of :mod:`advex.certify.layers` over a traced network. A call's
bounds on the inputs of the ReLUs (``PreBounds``, made by ``crown_intermediate`` or from the
IBP boxes) are the call's own, passed to each rule as the ReLU's relaxation; the traced layers
are never changed, so calls on one traced network do not interfere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advex.certify.layers import Conv, Layer, Linear, Relaxation, relu_relaxation
from advex.certify.patches import Patches, rowdot
from advex.errors import AdvexError

METHODS = ("ibp", "crown", "alpha-crown")
SLOPES = ("crown", "wong-kolter")
TRAINING_METHODS = ("ibp", "crown-ibp", "convex")
# Bytes of coefficient tensors per back-substitution chunk. On a CPU each tensor of a chunk should
# stay under glibc's largest mmap threshold (32 MB): a larger one is mapped fresh and page-faulted
# on every elementwise operation (a product written to a new 200 MB tensor ran at 2.4 GB/s here,
# to a 16 MB one at 39 GB/s). A GPU's caching allocator has no such cost: fewer, larger chunks.
CPU_CHUNK_MEMORY = 1 << 25
GPU_CHUNK_MEMORY = 1 << 28


def _chunk_memory(device: torch.device) -> int:
    return CPU_CHUNK_MEMORY if device.type == "cpu" else GPU_CHUNK_MEMORY


# A call's bounds on the inputs of its ReLUs: ReLU layer index -> (lower, upper), each (B, *shape).
# Every bound computation makes its own; the traced layers are never changed.
PreBounds = dict[int, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class InputSet:
    x: torch.Tensor
    eps: float
    norm: str
    lower: torch.Tensor  # the box containing the set, within [0, 1]
    upper: torch.Tensor

    @classmethod
    def ball(cls, x: torch.Tensor, eps: float, norm: str) -> InputSet:
        return cls(x, eps, norm, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1))

    def concretize(self, A: torch.Tensor, bias: torch.Tensor | float) -> torch.Tensor:
        """min over the set of A x + bias, for A (B, S, *x.shape[1:]) -> (B, S)."""
        a = A.flatten(2)
        lo = self.lower.flatten(1).unsqueeze(1)
        hi = self.upper.flatten(1).unsqueeze(1)
        box = (a.clamp(min=0) * lo + a.clamp(max=0) * hi).sum(-1)
        if self.norm == "l2":
            ball = (a * self.x.flatten(1).unsqueeze(1)).sum(-1) - self.eps * a.norm(dim=-1)
            box = torch.maximum(box, ball)
        return box + bias


def fixed_relaxations(pre: PreBounds) -> dict[int, tuple[Relaxation, torch.Tensor]]:
    """Each ReLU's CROWN relaxation (B, 1, *shape) and unstable mask from bounds ``pre``, for
    :func:`backsub` calls that reuse them with different slopes (an optimisation's steps)."""
    out = {}
    for j, (lo, hi) in pre.items():
        lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
        out[j] = (relu_relaxation(lo, hi, "crown"), (lo < 0) & (hi > 0))
    return out


def _relax(n: Layer, j: int, pre: PreBounds, slope: str, alpha=None, per_spec: bool = True, fixed=None):
    """The relaxation of layer j if it is a ReLU (None for a linear layer), from this call's
    bounds on its input. ``per_spec`` adds the spec dimension of dense coefficients (B, S,
    *shape): (B, 1, *shape), or (B, S, *shape) with alpha-CROWN's slopes ``alpha``; ``fixed``:
    :func:`fixed_relaxations` of ``pre``."""
    if not n.relaxed:
        return None
    if fixed is not None and slope == "crown" and per_spec:
        r, unstable = fixed[j]
        if alpha is None:
            return r
        return Relaxation(r.upper_slope, r.upper_intercept, torch.where(unstable, alpha, r.upper_slope))
    lo, hi = pre[j]
    if alpha is not None:
        return relu_relaxation(lo.unsqueeze(1), hi.unsqueeze(1), slope, alpha)
    r = relu_relaxation(lo, hi, slope)
    return Relaxation(*(t.unsqueeze(1) for t in r)) if per_spec else r


def ibp_boxes(
    nodes: list[Layer], lo: torch.Tensor, hi: torch.Tensor, pre: PreBounds | None = None, start: int = 1, boxes=None
) -> list:
    """Interval bounds of every layer's output (recomputed from layer ``start`` on), a ReLU's
    input box intersected with the call's tighter bounds ``pre`` where it has them."""
    boxes = list(boxes) if boxes is not None else [(lo, hi)]
    del boxes[start:]
    for j in range(start, len(nodes)):
        n = nodes[j]
        ins = [boxes[i] for i in n.inputs]
        if pre and j in pre:
            (l_, u_), (pl, pu) = ins[0], pre[j]
            ins = [(torch.maximum(l_, pl), torch.minimum(u_, pu))]
        boxes.append(n.interval(*ins))
    return boxes


def ibp_spec(nodes: list[Layer], boxes: list, C: torch.Tensor) -> torch.Tensor:
    """Lower bounds of C z by IBP, C folded into the last layer when it is Linear."""
    last = nodes[-1]
    if isinstance(last, Linear):
        return last.interval_spec(C, boxes[last.inputs[0]])
    lo, hi = boxes[-1]
    return (C.clamp(min=0) @ lo.unsqueeze(-1) + C.clamp(max=0) @ hi.unsqueeze(-1)).squeeze(-1)


def backsub(
    nodes: list[Layer],
    k: int,
    A: torch.Tensor,
    pre: PreBounds,
    slope: str = "crown",
    alphas: dict[int, torch.Tensor] | None = None,
    paired: bool = False,
    extra: dict[int, torch.Tensor] | None = None,
    record: dict[int, torch.Tensor] | None = None,
    fixed: dict[int, tuple[Relaxation, torch.Tensor]] | None = None,
):
    """Back-substitute the linear function A (B, S, *shape of layer k) of layer k's output down
    to the input: returns (A_input, bias) with A z_k >= A_input x + bias over the input set.

    ``paired`` (Wong-Kolter slope only, where every ReLU's lower and upper lines have the same
    slope): returns (A_input, bias_lower, bias_upper), A_input x + bias_lower <= A z_k <=
    A_input x + bias_upper, from one pass.

    ``extra`` (ReLU index -> (B, S, *its shape)): added to the coefficients on that ReLU's input
    (beta-CROWN's split multipliers); ``record``: filled with the coefficients reaching each ReLU's
    output (what branching heuristics score); ``fixed``: :func:`fixed_relaxations` of ``pre``,
    computed once for many calls."""
    acc: dict[int, torch.Tensor] = {k: A}
    bias = torch.zeros(A.shape[:2], device=A.device, dtype=A.dtype)
    bias_hi = torch.zeros_like(bias) if paired else None
    for j in range(k, 0, -1):
        a = acc.pop(j, None)
        if a is None:
            continue
        n = nodes[j]
        if paired:
            outs, b, b_hi = n.back_paired(a, _relax(n, j, pre, "wong-kolter"))
            if b_hi is not None:
                bias_hi = bias_hi + b_hi
        else:
            if record is not None and n.relaxed:
                record[j] = a
            outs, b = n.back(a, _relax(n, j, pre, slope, None if alphas is None else alphas.get(j), fixed=fixed))
            if extra is not None and j in extra:
                outs = [outs[0] + extra[j]]
        if b is not None:
            bias = bias + b
        for i, ai in zip(n.inputs, outs):
            acc[i] = acc[i] + ai if i in acc else ai
    return (acc[0], bias, bias_hi) if paired else (acc[0], bias)


def _needs_crown(nodes: list[Layer]) -> list[bool]:
    """Per layer: whether its IBP box can be loose (a ReLU, or two layers that mix neurons, before it)."""
    mixing = [0] * len(nodes)
    relu = [False] * len(nodes)
    for j, n in enumerate(nodes[1:], 1):
        mixing[j] = max(mixing[i] for i in n.inputs) + (not n.per_neuron)
        relu[j] = any(relu[i] for i in n.inputs) or n.relaxed or len(n.inputs) > 1
    return [relu[j] or mixing[j] > 1 for j in range(len(nodes))]


def crown_intermediate(
    nodes: list[Layer], inp: InputSet, slope: str, patches: bool = True, intersect_ibp: bool = True, fix=None
) -> tuple[list, PreBounds]:
    """Every ReLU's pre-activation bounds for this call: IBP, tightened by CROWN on the neurons
    IBP leaves unstable. Returns the final IBP boxes (computed with the tightened bounds) and
    the bounds. ``fix(r, lo, hi) -> (lo, hi)`` (branch and bound) tightens ReLU r's bounds
    with what the caller knows (a parent domain's bounds, its split neurons) before the
    layers above use them."""
    pre: PreBounds = {}
    boxes = ibp_boxes(nodes, inp.lower, inp.upper)
    loose = _needs_crown(nodes)
    bsz = inp.x.shape[0]
    widest = max(int(torch.Size(n.shape).numel()) for n in nodes)
    for r, n in enumerate(nodes):
        if not n.relaxed:
            continue
        p = n.inputs[0]
        lo, hi = boxes[p]
        if loose[p]:
            lo, hi = _tighten(nodes, p, lo, hi, inp, pre, slope, bsz, widest, patches, intersect_ibp)
        pre[r] = (lo, hi) if fix is None else fix(r, lo, hi)
        boxes = ibp_boxes(nodes, inp.lower, inp.upper, pre, start=r, boxes=boxes)
    return boxes, pre


def _tighten(nodes, p, lo, hi, inp, pre, slope, bsz, widest, patches=True, intersect_ibp=True):
    """Bounds (lo, hi) of layer p's output tightened by back-substitution: one linear bound per
    neuron (as patches where the layers below allow, else dense), in chunks of bounded memory."""
    shape = lo.shape[1:]
    flat_l, flat_u = lo.flatten(1), hi.flatten(1)
    # only neurons IBP leaves unstable need a linear bound (a stable one is relaxed by its sign
    # alone); without the IBP intersection every neuron gets one, as in the Wong-Kolter dual
    unstable = (flat_l < 0) & (flat_u > 0) if intersect_ibp else torch.ones_like(flat_l, dtype=torch.bool)
    counts = unstable.sum(1)
    s_max = int(counts.max()) if counts.numel() else 0
    if s_max == 0:
        return lo, hi
    # unstable first, position by position (every channel of a position, then the next): a chunk's
    # neurons then lie on a few rows of the map, the only ones its windows are cut from
    n_out = flat_l.shape[1]
    rank = torch.arange(n_out, device=lo.device)
    if len(shape) == 3:
        area = shape[1] * shape[2]
        rank = (rank % area) * shape[0] + rank // area
    order = torch.argsort((~unstable) * n_out + rank, dim=1)[:, :s_max]
    valid = torch.arange(s_max, device=lo.device)[None] < counts[:, None]
    chain = conv_chain(nodes, p) if patches else None
    per_spec = 4 * 2 * 3 * (widest if chain is None else _patch_size(nodes, chain))  # bytes per image and spec
    if chain is not None and slope == "crown" and 2 * s_max >= n_out and len(shape) == 3:
        # most neurons of some image need a bound: bound every neuron, position by position,
        # each window cut once for a position's channels instead of once per neuron
        c, area = shape[0], shape[1] * shape[2]
        step = max(1, _chunk_memory(lo.device) // (per_spec * c * bsz))
        for first in range(0, area, step):
            last = min(area, first + step)
            new_l, new_u = patch_bounds(nodes, chain, p, None, inp, pre, slope, positions=(first, last))
            cols = torch.arange(first, last, device=lo.device)[:, None] + area * torch.arange(c, device=lo.device)
            idx = cols.flatten().expand(bsz, -1)  # (position, channel) -> channel * area + position
            flat_l, flat_u = _put(flat_l, flat_u, idx, new_l, new_u, intersect_ibp)
        return flat_l.view_as(lo), flat_u.view_as(hi)
    s0 = 0
    while s0 < s_max:
        # the images with a neuron left from s0 on (the others' specs would be padding), in a
        # chunk of bounded memory
        rows = (counts > s0).nonzero().flatten()
        part = rows.numel() < bsz
        chunk = max(1, _chunk_memory(lo.device) // (per_spec * rows.numel()))
        idx = order[:, s0 : s0 + chunk]
        s = idx.shape[1]
        sub_idx, sub_inp, sub_pre = idx, inp, pre
        if part:
            sub_idx = idx.index_select(0, rows)
            sub_inp = InputSet(inp.x[rows], inp.eps, inp.norm, inp.lower[rows], inp.upper[rows])
            sub_pre = {j: (a[rows], b[rows]) for j, (a, b) in pre.items()}
        n = rows.numel()
        if chain is not None:
            new_l, new_u = patch_bounds(nodes, chain, p, sub_idx, sub_inp, sub_pre, slope)
        elif slope == "wong-kolter":  # one pass gives both bounds
            eye = torch.zeros(n, s, n_out, device=lo.device, dtype=lo.dtype)
            eye.scatter_(2, sub_idx.unsqueeze(-1), 1.0)
            a_in, b_lo, b_hi = backsub(nodes, p, eye.reshape(n, s, *shape), sub_pre, slope, paired=True)
            new_l, new_u = sub_inp.concretize(a_in, b_lo), -sub_inp.concretize(-a_in, -b_hi)
        else:
            eye = torch.zeros(n, s, n_out, device=lo.device, dtype=lo.dtype)
            eye.scatter_(2, sub_idx.unsqueeze(-1), 1.0)
            A = torch.cat([eye, -eye], 1).reshape(n, 2 * s, *shape)
            a_in, bias = backsub(nodes, p, A, sub_pre, slope)
            bound = sub_inp.concretize(a_in, bias)
            new_l, new_u = bound[:, :s], -bound[:, s:]
        if part:  # the other images keep their bounds
            new_l = flat_l.gather(1, idx).index_copy(0, rows, new_l)
            new_u = flat_u.gather(1, idx).index_copy(0, rows, new_u)
        flat_l, flat_u = _put(flat_l, flat_u, idx, new_l, new_u, intersect_ibp, valid[:, s0 : s0 + chunk])
        s0 += chunk
    return flat_l.view_as(lo), flat_u.view_as(hi)


def _put(flat_l, flat_u, idx, new_l, new_u, intersect_ibp: bool, ok=None):
    """flat_l, flat_u (B, N) with the columns idx (B, S) replaced by new_l, new_u where ``ok``
    (B, S; None: everywhere), intersected with the bounds there if ``intersect_ibp``. Out of
    place: certified training differentiates through these bounds."""
    cur_l, cur_u = flat_l.gather(1, idx), flat_u.gather(1, idx)
    if intersect_ibp:
        new_l, new_u = torch.maximum(cur_l, new_l), torch.minimum(cur_u, new_u)
    if ok is not None:
        new_l, new_u = torch.where(ok, new_l, cur_l), torch.where(ok, new_u, cur_u)
    return flat_l.scatter(1, idx, new_l), flat_u.scatter(1, idx, new_u)


# ---------------------------------------------------------------------------- patches
def conv_chain(nodes: list[Layer], p: int) -> list[int] | None:
    """Layer indices from p down to the input if every one has a patch rule and one input
    (convolutions, per-channel affine maps and ReLUs on (C, H, W) maps); None otherwise (the
    dense path handles it)."""
    chain, j = [], p
    while j != 0:
        n = nodes[j]
        if not n.has_patch_rule or len(n.inputs) != 1:
            return None
        chain.append(j)
        j = n.inputs[0]
    return chain


def _patch_size(nodes: list[Layer], chain: list[int]) -> int:
    """The largest patch (C * K * K) a neuron's back-substitution through ``chain`` reaches."""
    k, big = 1, 1
    for j in chain:
        n = nodes[j]
        if isinstance(n, Conv):
            k = (k - 1) * n.stride[0] + n.weight.shape[-1]
            big = max(big, n.in_shape[0] * k * k)
    return big


def patch_bounds(
    nodes: list[Layer],
    chain: list[int],
    p: int,
    idx: torch.Tensor | None,
    inp: InputSet,
    pre: PreBounds,
    slope: str,
    alphas: dict[int, torch.Tensor] | None = None,
    positions: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of the neurons idx (B, S) (flat indices into layer p's output),
    back-substituted as patches through ``chain`` (see :mod:`advex.certify.patches`).

    With the Wong-Kolter slope the lower and upper bounds share their coefficients (the
    lower and upper lines of every ReLU have the same slope), so one set of patches serves
    both, with a bias for each; with CROWN's slopes they differ and are computed as 2S specs.
    ``alphas`` (alpha-CROWN): ReLU index -> each of the 2S functions' lower slopes on its
    window (B, 2S, C, K, K); a ReLU missing from the dict gets the slope rule's, stored there.
    ``positions`` (first, last), CROWN's slope, instead of ``idx``: every neuron of those
    positions, in the order (position, channel), each window cut once per position."""
    paired = slope == "wong-kolter"
    if positions is not None:
        if paired or alphas is not None:
            raise ValueError("positions: CROWN's own slopes only")
        P = Patches.positions(inp.x.shape[0], *positions, nodes[p].shape, inp.x.dtype, inp.x.device)
    else:
        P = Patches.neurons(idx, nodes[p].shape, paired and alphas is None, inp.x.dtype)
    for j in chain:
        n = nodes[j]
        relax = _relax(n, j, pre, slope, per_spec=False)
        if alphas is not None and n.relaxed:
            if j not in alphas:
                alphas[j] = P.window(relax.lower_slope).detach().clamp(0, 1)
            P = n.patch_back(P, relax, lower=alphas[j])
        else:
            P = n.patch_back(P, relax)
    if inp.norm == "l2":
        P = P.inside()  # the norm reads every coefficient (the box's windows are 0 outside)
    xl, xu = P.windows(inp.lower, inp.upper)
    a = P.runs(P.coef)
    an, width = a.clamp(max=0), xu - xl
    low = rowdot(a, xl) + rowdot(an, width)  # a+ xl + a- xu
    paired = P.bias_hi is not None
    high = rowdot(a, xu) - rowdot(an, width) if paired else None  # a+ xu + a- xl
    if inp.norm == "l2":
        (x0,) = P.windows(inp.x)
        centre, radius = rowdot(a, x0), inp.eps * a.norm(dim=-1)
        low = torch.maximum(low, centre - radius)
        high = torch.minimum(high, centre + radius) if paired else None
    low = low.flatten(1) + P.bias_lo
    if paired:
        return low, high.flatten(1) + P.bias_hi
    if positions is not None:  # per position: C lower bounds, then C negated upper ones
        runs = low.view(low.shape[0], -1, 2, P.group // 2)
        return runs[:, :, 0].flatten(1), -runs[:, :, 1].flatten(1)
    s = low.shape[1] // 2
    return low[:, :s], -low[:, s:]


# ---------------------------------------------------------------------------- final bounds
def paired_bounds(
    nodes: list[Layer], inp: InputSet, C: torch.Tensor, intersect_ibp: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds (B, S) of C z with the Wong-Kolter slope, from one
    back-substitution (its lower and upper bounds share their coefficients)."""
    boxes, pre = crown_intermediate(nodes, inp, "wong-kolter", intersect_ibp=intersect_ibp)
    a_in, b_lo, b_hi = backsub(nodes, len(nodes) - 1, C, pre, "wong-kolter", paired=True)
    lo, hi = inp.concretize(a_in, b_lo), -inp.concretize(-a_in, -b_hi)
    if intersect_ibp:
        lo, hi = torch.maximum(lo, ibp_spec(nodes, boxes, C)), torch.minimum(hi, -ibp_spec(nodes, boxes, -C))
    return lo, hi


def spec_bounds(
    nodes: list[Layer],
    inp: InputSet,
    C: torch.Tensor,
    *,
    method: str = "crown",
    slope: str = "crown",
    alpha_steps: int = 20,
    alpha_lr: float = 0.1,
    intersect_ibp: bool = True,
    alpha_intermediate: bool = True,
    skip_proven: bool = False,
) -> torch.Tensor:
    """Lower bounds (B, S) of C z over the input set. ``intersect_ibp``: also keep IBP's
    bound wherever it is tighter (off: the pure linear-relaxation bound, e.g. to compare
    with the Wong-Kolter dual exactly). ``alpha_intermediate`` (alpha-CROWN): optimise the
    slopes of every intermediate bound too (:mod:`advex.certify.alpha`), not only the final
    layer's. ``skip_proven`` (alpha-CROWN): inputs CROWN already proves (every bound > 0) are
    not optimised."""
    if method == "ibp":
        return ibp_spec(nodes, ibp_boxes(nodes, inp.lower, inp.upper), C)
    if method == "alpha-crown":
        from advex.certify.alpha import alpha_crown  # it builds on this module

        return alpha_crown(nodes, inp, C, steps=alpha_steps, lr=alpha_lr, slope=slope, intersect_ibp=intersect_ibp,
                           intermediate_slopes=alpha_intermediate, skip_proven=skip_proven).lower  # fmt: skip
    return crown_bound(nodes, inp, C, slope, intersect_ibp)[0]


def crown_bound(nodes: list[Layer], inp: InputSet, C: torch.Tensor, slope: str = "crown", intersect_ibp: bool = True):
    """CROWN's lower bounds (B, S) of C z, with the intermediate bounds (``PreBounds``) and
    the IBP boxes it computed on the way."""
    boxes, pre = crown_intermediate(nodes, inp, slope, intersect_ibp=intersect_ibp)
    with torch.no_grad():
        a_in, bias = backsub(nodes, len(nodes) - 1, C, pre, slope)
        best = inp.concretize(a_in, bias)
        if intersect_ibp:
            best = torch.maximum(best, ibp_spec(nodes, boxes, C))
    return best, pre, boxes


def check_method(method: str, norm: str, slope: str, eps: float) -> None:
    if method not in METHODS:
        raise AdvexError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if norm not in ("linf", "l2"):
        raise AdvexError(f"unknown norm {norm!r}; use linf or l2")
    if norm == "l2" and method == "ibp":
        raise AdvexError("IBP bounds only L-inf balls; use method='crown' or 'alpha-crown' for L2")
    if slope not in SLOPES:
        raise AdvexError(f"unknown slope {slope!r}; use crown or wong-kolter")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0 or (norm == "linf" and eps > 1):
        accepted = "in (0, 1] (pixels in [0, 1], e.g. 0.1 or 8/255)" if norm == "linf" else "a finite radius > 0"
        raise AdvexError(f"an {norm.upper().replace('INF', '-inf')} eps must be {accepted}, got {eps!r}")


def training_margins(
    nodes: list[Layer], x: torch.Tensor, eps: float, C: torch.Tensor, method: str = "ibp", beta: float = 1.0
) -> torch.Tensor:
    """Differentiable lower bounds (B, S) of C z over the L-inf ball, for certified training.
    ``"ibp"``: IBP (Gowal et al. 2019). ``"crown-ibp"``: beta * CROWN-IBP + (1 - beta) * IBP
    (Zhang et al. 2020: CROWN's back-substitution for the final layer over IBP's intermediate
    bounds); IBP alone at beta <= 0. ``"convex"``: the Wong & Kolter (2018) dual bound (their
    slope for every layer's bounds; IBP's bound kept where tighter). ``nodes`` from
    ``trace(model, shape, detach=False)``."""
    inp = InputSet.ball(x, eps, "linf")
    if method == "convex":
        boxes, pre = crown_intermediate(nodes, inp, "wong-kolter")
        a_in, bias = backsub(nodes, len(nodes) - 1, C, pre, "wong-kolter")
        return torch.maximum(inp.concretize(a_in, bias), ibp_spec(nodes, boxes, C))
    boxes = ibp_boxes(nodes, inp.lower, inp.upper)
    ibp_lb = ibp_spec(nodes, boxes, C)
    if method == "ibp" or beta <= 0:
        return ibp_lb
    pre = {j: boxes[n.inputs[0]] for j, n in enumerate(nodes) if n.relaxed}
    a_in, bias = backsub(nodes, len(nodes) - 1, C, pre, "crown")
    return beta * inp.concretize(a_in, bias) + (1 - beta) * ibp_lb
