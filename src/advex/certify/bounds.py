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

from advex.certify.graph import LinearNode, Node, ReLUNode
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
    nodes: list[Node], k: int, A: torch.Tensor, slope: str = "crown", alphas: dict[int, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-substitute the linear function A (B, S, *shape of node k) of node k's output down
    to the input: returns (A_input, bias) with A z_k >= A_input x + bias over the input set."""
    acc: dict[int, torch.Tensor] = {k: A}
    bias = torch.zeros(A.shape[:2], device=A.device, dtype=A.dtype)
    for j in range(k, 0, -1):
        a = acc.pop(j, None)
        if a is None:
            continue
        n = nodes[j]
        if isinstance(n, ReLUNode):
            a_in, b = _relu_back(n, a, None if alphas is None else alphas.get(j), slope)
            outs = [a_in]
        else:
            outs, b = n.back(a)
        if b is not None:
            bias = bias + b
        for i, ai in zip(n.inputs, outs):
            acc[i] = acc[i] + ai if i in acc else ai
    return acc[0], bias


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


def crown_intermediate(nodes: list[Node], inp: InputSet, slope: str) -> list:
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
            lo, hi = _tighten(nodes, p, lo, hi, inp, slope, bsz, widest)
        n.lower, n.upper = lo, hi
        boxes = ibp_boxes(nodes, inp.lower, inp.upper, start=r, boxes=boxes)
    return boxes


def _tighten(nodes, p, lo, hi, inp, slope, bsz, widest):
    shape = lo.shape[1:]
    flat_l, flat_u = lo.flatten(1).clone(), hi.flatten(1).clone()
    unstable = (flat_l < 0) & (flat_u > 0)
    counts = unstable.sum(1)
    s_max = int(counts.max()) if counts.numel() else 0
    if s_max == 0:
        return lo, hi
    order = torch.argsort((~unstable).to(torch.int8), dim=1, stable=True)[:, :s_max]  # unstable first
    valid = torch.arange(s_max, device=lo.device)[None] < counts[:, None]
    chunk = max(1, _MEMORY // (4 * 2 * 3 * bsz * widest))
    n_out = flat_l.shape[1]
    for s0 in range(0, s_max, chunk):
        idx = order[:, s0 : s0 + chunk]
        s = idx.shape[1]
        eye = torch.zeros(bsz, s, n_out, device=lo.device, dtype=lo.dtype)
        eye.scatter_(2, idx.unsqueeze(-1), 1.0)
        A = torch.cat([eye, -eye], 1).reshape(bsz, 2 * s, *shape)
        a_in, bias = backsub(nodes, p, A, slope)
        bound = inp.concretize(a_in, bias)
        new_l, new_u = bound[:, :s], -bound[:, s:]
        ok = valid[:, s0 : s0 + chunk]
        cur_l, cur_u = flat_l.gather(1, idx), flat_u.gather(1, idx)
        flat_l.scatter_(1, idx, torch.where(ok, torch.maximum(cur_l, new_l), cur_l))
        flat_u.scatter_(1, idx, torch.where(ok, torch.minimum(cur_u, new_u), cur_u))
    return flat_l.view_as(lo), flat_u.view_as(hi)


def spec_bounds(
    nodes: list[Node],
    inp: InputSet,
    C: torch.Tensor,
    *,
    method: str = "crown",
    slope: str = "crown",
    alpha_steps: int = 20,
    alpha_lr: float = 0.1,
) -> torch.Tensor:
    """Lower bounds (B, S) of C z over the input set."""
    if method == "ibp":
        return ibp_spec(nodes, ibp_boxes(nodes, inp.lower, inp.upper), C)
    boxes = crown_intermediate(nodes, inp, slope)
    ibp_lb = ibp_spec(nodes, boxes, C)
    k = len(nodes) - 1
    with torch.no_grad():
        a_in, bias = backsub(nodes, k, C, slope)
        best = torch.maximum(inp.concretize(a_in, bias), ibp_lb)
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
