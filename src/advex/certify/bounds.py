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
- alpha-CROWN (Xu et al. 2021): the lower slopes of the final bound optimised per neuron
  and per output by projected gradient ascent (Adam) from CROWN's; never looser than CROWN
  (the best bound seen is kept). Intermediate bounds stay CROWN's.

Inputs: the L-inf ball clipped to [0, 1] (the box [max(x - eps, 0), min(x + eps, 1)]), or
the L2 ball (CROWN and alpha-CROWN: the tighter of the L2-ball bound and the clipped-box
bound, both sound). Specifications: a matrix C (B, S, K) turns the K logits into S linear
outputs (C z); margins y - j are folded into the last linear layer, as the papers do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advex.certify.graph import AffineNode, ConvNode, LinearNode, Node, ReLUNode
from advex.errors import AdvexError

METHODS = ("ibp", "crown", "alpha-crown")
SLOPES = ("crown", "wong-kolter")
_MEMORY = 1 << 30  # bytes of coefficient tensors per back-substitution chunk


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


def ibp_boxes(nodes: list[Node], lo: torch.Tensor, hi: torch.Tensor, start: int = 1, boxes=None) -> list:
    """Interval bounds of every node's output (recomputed from node ``start`` on)."""
    boxes = list(boxes) if boxes is not None else [(lo, hi)]
    del boxes[start:]
    for n in nodes[start:]:
        ins = [boxes[i] for i in n.inputs]
        if isinstance(n, ReLUNode):
            l_, u_ = ins[0]
            if n.lower is not None:  # tighter pre-activation bounds found by CROWN
                l_, u_ = torch.maximum(l_, n.lower), torch.minimum(u_, n.upper)
            boxes.append((l_.clamp_min(0), u_.clamp_min(0)))
        else:
            boxes.append(n.ibp(*ins))
    return boxes


def ibp_spec(nodes: list[Node], boxes: list, C: torch.Tensor) -> torch.Tensor:
    """Lower bounds of C z by IBP, C folded into the last layer when it is Linear."""
    last = nodes[-1]
    if isinstance(last, LinearNode):
        lo, hi = boxes[last.inputs[0]]
        c, r = (lo + hi) / 2, (hi - lo) / 2
        w = C @ last.weight  # (B, S, in)
        b = C @ last.bias if last.bias is not None else 0.0
        return (w @ c.unsqueeze(-1)).squeeze(-1) - (w.abs() @ r.unsqueeze(-1)).squeeze(-1) + b
    lo, hi = boxes[-1]
    return (C.clamp(min=0) @ lo.unsqueeze(-1) + C.clamp(max=0) @ hi.unsqueeze(-1)).squeeze(-1)


def _relu_back(n: ReLUNode, A: torch.Tensor, alpha: torch.Tensor | None, slope: str):
    """Coefficients on the ReLU's input, and bias, for a lower bound of A relu(z)."""
    l_, u_ = n.lower.unsqueeze(1), n.upper.unsqueeze(1)
    unstable = (l_ < 0) & (u_ > 0)
    active = (l_ >= 0).to(A.dtype)
    su = torch.where(unstable, u_ / (u_ - l_).clamp_min(1e-12), active)
    iu = torch.where(unstable, -su * l_, torch.zeros_like(su))
    if alpha is None:
        alpha = (u_ > -l_).to(A.dtype) if slope == "crown" else su
    sl = torch.where(unstable, alpha, active)
    pos, neg = A.clamp(min=0), A.clamp(max=0)
    return pos * sl + neg * su, (neg * iu).flatten(2).sum(-1)


def backsub(
    nodes: list[Node],
    k: int,
    A: torch.Tensor,
    slope: str = "crown",
    alphas: dict[int, torch.Tensor] | None = None,
    paired: bool = False,
):
    """Back-substitute the linear function A (B, S, *shape of node k) of node k's output down
    to the input: returns (A_input, bias) with A z_k >= A_input x + bias over the input set.

    ``paired`` (Wong-Kolter slope only, where every ReLU's lower and upper lines have the same
    slope): returns (A_input, bias_lower, bias_upper), A_input x + bias_lower <= A z_k <=
    A_input x + bias_upper, from one pass."""
    acc: dict[int, torch.Tensor] = {k: A}
    bias = torch.zeros(A.shape[:2], device=A.device, dtype=A.dtype)
    bias_hi = torch.zeros_like(bias) if paired else None
    for j in range(k, 0, -1):
        a = acc.pop(j, None)
        if a is None:
            continue
        n = nodes[j]
        if isinstance(n, ReLUNode) and paired:
            su, iu, _ = _slope_maps(n, "wong-kolter")
            su, iu = su.unsqueeze(1), iu.unsqueeze(1)
            neg = a.clamp(max=0)
            b = (neg * iu).flatten(2).sum(-1)
            bias_hi = bias_hi + ((a - neg) * iu).flatten(2).sum(-1)
            outs = [a * su]
        elif isinstance(n, ReLUNode):
            a_in, b = _relu_back(n, a, None if alphas is None else alphas.get(j), slope)
            outs = [a_in]
        else:
            outs, b = n.back(a)
            if b is not None and paired:
                bias_hi = bias_hi + b
        if b is not None:
            bias = bias + b
        for i, ai in zip(n.inputs, outs):
            acc[i] = acc[i] + ai if i in acc else ai
    return (acc[0], bias, bias_hi) if paired else (acc[0], bias)


def _needs_crown(nodes: list[Node]) -> list[bool]:
    """Per node: whether its IBP box can be loose (a ReLU, or two non-diagonal layers, before it)."""
    from advex.certify.graph import AffineNode, FlattenNode, Input

    mixing = [0] * len(nodes)
    relu = [False] * len(nodes)
    for j, n in enumerate(nodes):
        if isinstance(n, Input):
            continue
        mixing[j] = max(mixing[i] for i in n.inputs) + (not isinstance(n, (AffineNode, FlattenNode, ReLUNode)))
        relu[j] = any(relu[i] for i in n.inputs) or isinstance(n, ReLUNode) or len(n.inputs) > 1
    return [relu[j] or mixing[j] > 1 for j in range(len(nodes))]


def crown_intermediate(
    nodes: list[Node], inp: InputSet, slope: str, patches: bool = True, intersect_ibp: bool = True
) -> list:
    """Set every ReLU's pre-activation bounds: IBP, tightened by CROWN on the neurons IBP
    leaves unstable. Returns the final IBP boxes (computed with the tightened bounds)."""
    for n in nodes:
        if isinstance(n, ReLUNode):
            n.lower = n.upper = None
    boxes = ibp_boxes(nodes, inp.lower, inp.upper)
    loose = _needs_crown(nodes)
    bsz = inp.x.shape[0]
    widest = max(int(torch.Size(n.shape).numel()) for n in nodes)
    for r, n in enumerate(nodes):
        if not isinstance(n, ReLUNode):
            continue
        p = n.inputs[0]
        lo, hi = boxes[p]
        if loose[p]:
            lo, hi = _tighten(nodes, p, lo, hi, inp, slope, bsz, widest, patches, intersect_ibp)
        n.lower, n.upper = lo, hi
        boxes = ibp_boxes(nodes, inp.lower, inp.upper, start=r, boxes=boxes)
    return boxes


def _patch_size(nodes: list[Node], chain: list[int]) -> int:
    """The largest patch (C * K * K) a neuron's back-substitution through ``chain`` reaches."""
    k, big = 1, 1
    for j in chain:
        n = nodes[j]
        if isinstance(n, ConvNode):
            k = (k - 1) * n.stride[0] + n.weight.shape[-1]
            big = max(big, n.in_shape[0] * k * k)
    return big


def _tighten(nodes, p, lo, hi, inp, slope, bsz, widest, patches=True, intersect_ibp=True):
    shape = lo.shape[1:]
    flat_l, flat_u = lo.flatten(1), hi.flatten(1)
    # only neurons IBP leaves unstable need a linear bound (a stable one is relaxed by its sign
    # alone); without the IBP intersection every neuron gets one, as in the Wong-Kolter dual
    unstable = (flat_l < 0) & (flat_u > 0) if intersect_ibp else torch.ones_like(flat_l, dtype=torch.bool)
    counts = unstable.sum(1)
    s_max = int(counts.max()) if counts.numel() else 0
    if s_max == 0:
        return lo, hi
    order = torch.argsort((~unstable).to(torch.int8), dim=1, stable=True)[:, :s_max]  # unstable first
    valid = torch.arange(s_max, device=lo.device)[None] < counts[:, None]
    chain = conv_chain(nodes, p) if patches else None
    chunk = max(1, _MEMORY // (4 * 2 * 3 * bsz * (widest if chain is None else _patch_size(nodes, chain))))
    n_out = flat_l.shape[1]
    for s0 in range(0, s_max, chunk):
        idx = order[:, s0 : s0 + chunk]
        s = idx.shape[1]
        if chain is not None:
            new_l, new_u = patch_bounds(nodes, chain, p, idx, inp, slope)
        elif slope == "wong-kolter":  # one pass gives both bounds
            eye = torch.zeros(bsz, s, n_out, device=lo.device, dtype=lo.dtype)
            eye.scatter_(2, idx.unsqueeze(-1), 1.0)
            a_in, b_lo, b_hi = backsub(nodes, p, eye.reshape(bsz, s, *shape), slope, paired=True)
            new_l, new_u = inp.concretize(a_in, b_lo), -inp.concretize(-a_in, -b_hi)
        else:
            eye = torch.zeros(bsz, s, n_out, device=lo.device, dtype=lo.dtype)
            eye.scatter_(2, idx.unsqueeze(-1), 1.0)
            A = torch.cat([eye, -eye], 1).reshape(bsz, 2 * s, *shape)
            a_in, bias = backsub(nodes, p, A, slope)
            bound = inp.concretize(a_in, bias)
            new_l, new_u = bound[:, :s], -bound[:, s:]
        ok = valid[:, s0 : s0 + chunk]
        cur_l, cur_u = flat_l.gather(1, idx), flat_u.gather(1, idx)
        if intersect_ibp:
            new_l, new_u = torch.maximum(cur_l, new_l), torch.minimum(cur_u, new_u)
        # out of place: certified training differentiates through these bounds
        flat_l = flat_l.scatter(1, idx, torch.where(ok, new_l, cur_l))
        flat_u = flat_u.scatter(1, idx, torch.where(ok, new_u, cur_u))
    return flat_l.view_as(lo), flat_u.view_as(hi)


# ---------------------------------------------------------------------------- patches
# Back-substitution for neurons of a convolutional layer, through a chain of convolutions,
# per-channel affine maps and ReLUs down to the input: the coefficients of one neuron are
# nonzero only on its receptive field, so each is kept as a small (C, K, K) patch anchored at
# (row * stride - pad, col * stride - pad) of the current layer, instead of a whole map
# (the "patches mode" of auto_LiRPA). Same bound, a fraction of the work.
def conv_chain(nodes: list[Node], p: int) -> list[int] | None:
    """Node indices from p down to the input if they form a chain of Conv/Affine/ReLU nodes on
    (C, H, W) maps; None otherwise (the dense path handles it)."""
    chain, j = [], p
    while j != 0:
        n = nodes[j]
        if not isinstance(n, (ConvNode, AffineNode, ReLUNode)) or len(n.inputs) != 1 or len(n.shape) != 3:
            return None
        chain.append(j)
        j = n.inputs[0]
    return chain


def _windows(m: torch.Tensor, pos: torch.Tensor, grid: tuple[int, int], k: int, stride: int, pad: int):
    """(B, S, C, k, k) windows of maps m (B, C, H, W) at anchors pos (B, S) = row * cols + col
    of a (rows, cols) grid, the window of (row, col) starting at (row * stride - pad, ...)."""
    bsz, c, h, w = m.shape
    rows, cols = grid
    pad_b = max(0, (rows - 1) * stride + k - h - pad)
    pad_r = max(0, (cols - 1) * stride + k - w - pad)
    mp = F.pad(m, (pad, pad_r, pad, pad_b))
    win = F.unfold(mp, k, stride=stride)  # (B, C*k*k, L) over the anchors, row-major
    n_cols = (mp.shape[-1] - k) // stride + 1
    r, col = pos // cols, pos % cols
    at = (r * n_cols + col).unsqueeze(1).expand(-1, win.shape[1], -1)
    return win.gather(2, at).transpose(1, 2).reshape(bsz, pos.shape[1], c, k, k)


def _transpose_patch(p: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
    """conv_transpose2d of many small patches (N, Co, K, K): one matmul and a fold (sum of
    overlapping kernels), much faster on a CPU than conv_transpose2d on tiny maps."""
    n, co, k, _ = p.shape
    if groups != 1:
        return F.conv_transpose2d(p, weight, stride=stride, groups=groups)
    ci, kk = weight.shape[1], weight.shape[-1]
    if k == 1:
        return (p.reshape(n, co) @ weight.reshape(co, ci * kk * kk)).reshape(n, ci, kk, kk)
    cols = p.flatten(2).transpose(1, 2) @ weight.reshape(co, ci * kk * kk)  # (N, K*K, Ci*k*k)
    out = (k - 1) * stride + kk
    return F.fold(cols.transpose(1, 2), (out, out), kk, stride=stride)


def _slope_maps(n: ReLUNode, slope: str):
    """Per neuron of a ReLU (B, *shape): upper slope su and intercept iu, lower slope sl."""
    l_, u_ = n.lower, n.upper
    unstable = (l_ < 0) & (u_ > 0)
    active = (l_ >= 0).to(l_.dtype)
    su = torch.where(unstable, u_ / (u_ - l_).clamp_min(1e-12), active)
    iu = torch.where(unstable, -su * l_, torch.zeros_like(su))
    sl = su if slope == "wong-kolter" else torch.where(unstable, (u_ > -l_).to(l_.dtype), active)
    return su, iu, sl


def patch_bounds(
    nodes: list[Node], chain: list[int], p: int, idx: torch.Tensor, inp: InputSet, slope: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of the neurons idx (B, S) (flat indices into node p's output).

    With the Wong-Kolter slope the lower and upper bounds share their coefficients (the
    lower and upper lines of every ReLU have the same slope), so one set of patches serves
    both, with a bias for each; with CROWN's slopes they differ and are computed as 2S specs."""
    bsz, s = idx.shape
    c, h, w = nodes[p].shape
    ch, pos = idx // (h * w), idx % (h * w)
    grid = (h, w)
    dev, dt = inp.x.device, inp.x.dtype
    paired = slope == "wong-kolter"
    n_spec = s if paired else 2 * s
    patch = torch.zeros(bsz, n_spec, c, 1, 1, device=dev, dtype=dt)
    one = torch.ones(bsz, s, 1, device=dev, dtype=dt)
    patch[:, :s].view(bsz, s, c).scatter_(2, ch.unsqueeze(-1), one)
    if not paired:
        patch[:, s:].view(bsz, s, c).scatter_(2, ch.unsqueeze(-1), -one)
    pos2 = pos if paired else torch.cat([pos, pos], 1)
    k, stride, pad = 1, 1, 0
    bias_lo = torch.zeros(bsz, n_spec, device=dev, dtype=dt)
    bias_hi = torch.zeros(bsz, n_spec, device=dev, dtype=dt) if paired else None
    for j in chain:
        n = nodes[j]
        if isinstance(n, ReLUNode):
            su_m, iu_m, sl_m = _slope_maps(n, slope)
            su = _windows(su_m, pos2, grid, k, stride, pad)
            iu = _windows(iu_m, pos2, grid, k, stride, pad)
            neg = patch.clamp(max=0)
            bias_lo = bias_lo + (neg * iu).flatten(2).sum(-1)
            if paired:
                bias_hi = bias_hi + ((patch - neg) * iu).flatten(2).sum(-1)
                patch = patch * su
            else:
                sl = _windows(sl_m, pos2, grid, k, stride, pad)
                patch = (patch - neg) * sl + neg * su
        elif isinstance(n, AffineNode):
            b = (patch * n.shift.view(-1, 1, 1)).flatten(2).sum(-1)
            bias_lo = bias_lo + b
            bias_hi = bias_hi + b if paired else None
            patch = patch * n.scale.view(-1, 1, 1)
        else:  # ConvNode: from its output level to its input level
            if n.bias is not None:
                b = (patch.sum((-2, -1)) * n.bias).sum(-1)
                bias_lo = bias_lo + b
                bias_hi = bias_hi + b if paired else None
            (sh, sw), (ph, pw) = n.stride, n.padding
            if sh != sw or ph != pw or n.weight.shape[-1] != n.weight.shape[-2]:
                raise AssertionError("patch_bounds needs square kernels, strides and paddings")
            kk = n.weight.shape[-1]
            cin, hin, win_ = n.in_shape
            patch = _transpose_patch(patch.reshape(bsz * n_spec, -1, k, k), n.weight, sh, n.groups)
            k, pad, stride = (k - 1) * sh + kk, pad * sh + ph, stride * sh
            patch = patch.reshape(bsz, n_spec, cin, k, k)
            # entries on the zero padding are not neurons: drop them
            r0 = (pos2 // grid[1]) * stride - pad
            c0 = (pos2 % grid[1]) * stride - pad
            off = torch.arange(k, device=dev)
            rin = ((r0.unsqueeze(-1) + off) >= 0) & ((r0.unsqueeze(-1) + off) < hin)
            cinb = ((c0.unsqueeze(-1) + off) >= 0) & ((c0.unsqueeze(-1) + off) < win_)
            patch = patch * (rin.unsqueeze(-1) & cinb.unsqueeze(-2)).unsqueeze(2).to(dt)
    xl = _windows(inp.lower, pos2, grid, k, stride, pad).flatten(2)
    xu = _windows(inp.upper, pos2, grid, k, stride, pad).flatten(2)
    a = patch.flatten(2)
    ap, an = a.clamp(min=0), a.clamp(max=0)
    low = (ap * xl + an * xu).sum(-1)
    high = (ap * xu + an * xl).sum(-1) if paired else None
    if inp.norm == "l2":
        x0 = _windows(inp.x, pos2, grid, k, stride, pad).flatten(2)
        centre, radius = (a * x0).sum(-1), inp.eps * a.norm(dim=-1)
        low = torch.maximum(low, centre - radius)
        high = torch.minimum(high, centre + radius) if paired else None
    if paired:
        return low + bias_lo, high + bias_hi
    low = low + bias_lo
    return low[:, :s], -low[:, s:]


def paired_bounds(
    nodes: list[Node], inp: InputSet, C: torch.Tensor, intersect_ibp: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds (B, S) of C z with the Wong-Kolter slope, from one
    back-substitution (its lower and upper bounds share their coefficients)."""
    boxes = crown_intermediate(nodes, inp, "wong-kolter", intersect_ibp=intersect_ibp)
    a_in, b_lo, b_hi = backsub(nodes, len(nodes) - 1, C, "wong-kolter", paired=True)
    lo, hi = inp.concretize(a_in, b_lo), -inp.concretize(-a_in, -b_hi)
    if intersect_ibp:
        lo, hi = torch.maximum(lo, ibp_spec(nodes, boxes, C)), torch.minimum(hi, -ibp_spec(nodes, boxes, -C))
    return lo, hi


def spec_bounds(
    nodes: list[Node],
    inp: InputSet,
    C: torch.Tensor,
    *,
    method: str = "crown",
    slope: str = "crown",
    alpha_steps: int = 20,
    alpha_lr: float = 0.1,
    intersect_ibp: bool = True,
) -> torch.Tensor:
    """Lower bounds (B, S) of C z over the input set. ``intersect_ibp``: also keep IBP's
    bound wherever it is tighter (off: the pure linear-relaxation bound, e.g. to compare
    with the Wong-Kolter dual exactly)."""
    if method == "ibp":
        return ibp_spec(nodes, ibp_boxes(nodes, inp.lower, inp.upper), C)
    boxes = crown_intermediate(nodes, inp, slope, intersect_ibp=intersect_ibp)
    k = len(nodes) - 1
    with torch.no_grad():
        a_in, bias = backsub(nodes, k, C, slope)
        best = inp.concretize(a_in, bias)
        if intersect_ibp:
            best = torch.maximum(best, ibp_spec(nodes, boxes, C))
    if method == "crown" or alpha_steps <= 0:
        return best
    # alpha-CROWN: one lower slope per (spec, neuron) of every ReLU, from CROWN's choice
    alphas: dict[int, torch.Tensor] = {}
    for j, n in enumerate(nodes):
        if isinstance(n, ReLUNode):
            if slope == "crown":
                init = (n.upper > -n.lower).to(C.dtype)
            else:
                init = n.upper / (n.upper - n.lower).clamp_min(1e-12)
            alphas[j] = init.clamp(0, 1).unsqueeze(1).expand(-1, C.shape[1], *init.shape[1:]).clone().requires_grad_()
    if not alphas:
        return best
    opt = torch.optim.Adam(list(alphas.values()), lr=alpha_lr)
    for _ in range(alpha_steps):
        with torch.enable_grad():
            a_in, bias = backsub(nodes, k, C, slope, alphas)
            lb = inp.concretize(a_in, bias)
            opt.zero_grad(set_to_none=True)
            (-lb.sum()).backward()
        opt.step()
        with torch.no_grad():
            for a in alphas.values():
                a.clamp_(0, 1)
            best = torch.maximum(best, lb.detach())
    with torch.no_grad():
        a_in, bias = backsub(nodes, k, C, slope, alphas)
        return torch.maximum(best, inp.concretize(a_in, bias))


def check_method(method: str, norm: str, slope: str, eps: float) -> None:
    if method not in METHODS:
        raise AdvexError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if norm not in ("linf", "l2"):
        raise AdvexError(f"unknown norm {norm!r}; use linf or l2")
    if norm == "l2" and method == "ibp":
        raise AdvexError("IBP bounds only L-inf balls; use method='crown' or 'alpha-crown' for L2")
    if slope not in SLOPES:
        raise AdvexError(f"unknown slope {slope!r}; use crown or wong-kolter")
    if not isinstance(eps, (int, float)) or not 0 < eps <= 1:
        raise AdvexError(f"eps must be in (0, 1] (pixels in [0, 1], e.g. 0.1 or 8/255), got {eps!r}")


def training_margins(
    nodes: list[Node], x: torch.Tensor, eps: float, C: torch.Tensor, beta: float, method: str = "ibp"
) -> torch.Tensor:
    """Differentiable lower bounds (B, S) of C z for certified training. ``method="ibp"``: IBP
    (Gowal et al. 2019), and for ``beta`` > 0 the CROWN-IBP mix beta * CROWN-IBP + (1 - beta) *
    IBP (Zhang et al. 2020: CROWN's back-substitution for the final layer over IBP's
    intermediate bounds). ``method="convex"``: the Wong & Kolter (2018) dual bound (their
    slope for every layer's bounds; IBP's bound kept where tighter). ``nodes`` from
    ``trace(model, shape, detach=False)``."""
    inp = InputSet.ball(x, eps, "linf")
    if method == "convex":
        boxes = crown_intermediate(nodes, inp, "wong-kolter")
        a_in, bias = backsub(nodes, len(nodes) - 1, C, "wong-kolter")
        return torch.maximum(inp.concretize(a_in, bias), ibp_spec(nodes, boxes, C))
    for n in nodes:
        if isinstance(n, ReLUNode):
            n.lower = n.upper = None
    boxes = ibp_boxes(nodes, inp.lower, inp.upper)
    ibp_lb = ibp_spec(nodes, boxes, C)
    if beta <= 0:
        return ibp_lb
    for n in nodes:
        if isinstance(n, ReLUNode):
            n.lower, n.upper = boxes[n.inputs[0]]
    a_in, bias = backsub(nodes, len(nodes) - 1, C, "crown")
    return beta * inp.concretize(a_in, bias) + (1 - beta) * ibp_lb
