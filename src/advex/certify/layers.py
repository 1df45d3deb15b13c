"""The layers the certifiers understand, each with all of its bound rules in one class.

A traced network (:func:`advex.certify.graph.trace`) is a list of these layers in execution
order; layer 0 is the input. Every class holds, for its operation (the per-operator rule table
of auto_LiRPA, for the layers certified training uses):

- ``forward(*xs)``: the output for concrete inputs;
- ``interval(*boxes)``: IBP (Gowal et al. 2019): a box on the output from boxes on the inputs;
- ``back(A, relax)``: CROWN back-substitution (Zhang et al. 2018): for a linear function A of
  the output, the linear function of each input and the bias with A z >= sum_i A_i z_i + bias
  (an equality for the linear layers);
- ``back_paired(A, relax)``: the same for a lower and an upper bound at once, with one set of
  coefficients and a bias for each (possible when every ReLU's lower and upper lines have the
  same slope, as with the Wong-Kolter slope);
- ``patch_back(P, relax)``: ``back`` on :class:`~advex.certify.patches.Patches`, where each
  neuron's coefficients are kept on its receptive field only; a layer without this rule has
  ``has_patch_rule`` false, and its bounds take the dense path.

Linear bounds are coefficient tensors ``A`` of shape (B, S, *layer shape) -- S specifications
per input -- with biases of shape (B, S).

Layers are frozen: nothing a bound computation finds is stored on them. The one nonlinear
layer, :class:`ReLU`, gets its relaxation from the call (``relax``), built by
:func:`relu_relaxation` from that call's bounds on its input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from advex.certify.patches import Patches, rowdot, transpose_patch

Box = tuple[torch.Tensor, torch.Tensor]


class Relaxation(NamedTuple):
    """Per neuron of a ReLU with input z in [l, u]: lower_slope * z <= relu(z) <= upper_slope * z
    + upper_intercept."""

    upper_slope: torch.Tensor
    upper_intercept: torch.Tensor
    lower_slope: torch.Tensor


def relu_relaxation(
    lower: torch.Tensor, upper: torch.Tensor, slope: str = "crown", alpha: torch.Tensor | None = None
) -> Relaxation:
    """The linear relaxation of relu(z) for z in [lower, upper] (elementwise; shapes broadcast).

    A stable neuron is linear: slope 1 (l >= 0) or 0 (u <= 0) above and below. An unstable one
    (l < 0 < u) is bounded above by the chord u (z - l) / (u - l) and below by alpha z, with
    alpha = 1 if u > -l else 0 for ``slope="crown"`` (Zhang et al. 2018), alpha = u / (u - l)
    for ``slope="wong-kolter"`` (Wong & Kolter 2018; the lower and upper lines are then
    parallel), or the optimised ``alpha`` of alpha-CROWN (Xu et al. 2021)."""
    unstable = (lower < 0) & (upper > 0)
    active = (lower >= 0).to(lower.dtype)
    su = torch.where(unstable, upper / (upper - lower).clamp_min(1e-12), active)
    iu = torch.where(unstable, -su * lower, torch.zeros_like(su))
    if alpha is None:
        alpha = (upper > -lower).to(lower.dtype) if slope == "crown" else su
    return Relaxation(su, iu, torch.where(unstable, alpha, active))


@dataclass(frozen=True, eq=False, kw_only=True)
class Layer:
    """One operation of a traced network: the layers it reads and the shape it makes."""

    inputs: tuple[int, ...]  # indices of the layers whose outputs this one reads
    shape: tuple[int, ...]  # output shape without the batch dimension
    name: str

    per_neuron: ClassVar[bool] = False  # acts on each neuron alone (IBP through it loses nothing)
    relaxed: ClassVar[bool] = False  # nonlinear: its linear rules need a Relaxation from the call

    @property
    def has_patch_rule(self) -> bool:
        return False

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def interval(self, *boxes: Box) -> Box:
        raise NotImplementedError

    def back(self, A: torch.Tensor, relax: Relaxation | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Coefficients on each input, and the bias added (None: none)."""
        raise NotImplementedError

    def back_paired(self, A: torch.Tensor, relax: Relaxation | None = None):
        """Coefficients on each input, and the biases added to the lower and the upper bound."""
        outs, bias = self.back(A, relax)
        return outs, bias, bias

    def patch_back(self, P: Patches, relax: Relaxation | None = None) -> Patches:
        raise NotImplementedError(f"{self.name} has no patch rule")


def _centre_radius(box: Box) -> Box:
    return (box[0] + box[1]) / 2, (box[1] - box[0]) / 2


@dataclass(frozen=True, eq=False, kw_only=True)
class Input(Layer):
    def forward(self, x):
        return x


@dataclass(frozen=True, eq=False, kw_only=True)
class Linear(Layer):
    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor | None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def interval(self, box):
        c, r = _centre_radius(box)
        c, r = F.linear(c, self.weight, self.bias), F.linear(r, self.weight.abs())
        return c - r, c + r

    def interval_spec(self, C: torch.Tensor, box: Box) -> torch.Tensor:
        """Lower bounds (B, S) of C z over the input box, C (B, S, out) folded into the layer
        (tighter than bounding C z from the output box)."""
        c, r = _centre_radius(box)
        w = C @ self.weight  # (B, S, in)
        b = C @ self.bias if self.bias is not None else 0.0
        return (w @ c.unsqueeze(-1)).squeeze(-1) - (w.abs() @ r.unsqueeze(-1)).squeeze(-1) + b

    def back(self, A, relax=None):
        bias = A @ self.bias if self.bias is not None else None
        return [A @ self.weight], bias


@dataclass(frozen=True, eq=False, kw_only=True)
class Conv(Layer):
    """Conv2d with zero padding and no dilation; average pooling is one with groups = channels."""

    weight: torch.Tensor  # (out, in / groups, kh, kw)
    bias: torch.Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    in_shape: tuple[int, int, int]

    @property
    def has_patch_rule(self) -> bool:  # patches are square
        kh, kw = self.weight.shape[-2:]
        return kh == kw and self.stride[0] == self.stride[1] and self.padding[0] == self.padding[1]

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, groups=self.groups)

    def interval(self, box):
        c, r = _centre_radius(box)
        c = self.forward(c)
        r = F.conv2d(r, self.weight.abs(), None, self.stride, self.padding, groups=self.groups)
        return c - r, c + r

    def back(self, A, relax=None):
        bsz, s = A.shape[:2]
        cout, ho, wo = A.shape[2:]
        cin, hi, wi = self.in_shape
        kh, kw = self.weight.shape[-2:]
        oph = hi - ((ho - 1) * self.stride[0] - 2 * self.padding[0] + kh)
        opw = wi - ((wo - 1) * self.stride[1] - 2 * self.padding[1] + kw)
        # channels-last: the CPU's fast transposed convolution (2x here), and its output keeps the
        # layout through the elementwise rules to the next convolution
        maps = A.reshape(bsz * s, cout, ho, wo).contiguous(memory_format=torch.channels_last)
        a = F.conv_transpose2d(maps, self.weight, None, self.stride, self.padding, (oph, opw), self.groups)
        bias = (A.sum((-2, -1)) * self.bias).sum(-1) if self.bias is not None else None
        return [a.reshape(bsz, s, cin, hi, wi)], bias

    def patch_back(self, P, relax=None):
        """Each (C_out, K, K) patch becomes a (C_in, (K - 1) stride + k, ...) patch of the input,
        anchored stride times further out; entries on the zero padding are dropped (lazily: see
        ``Patches.outside``)."""
        P = P.inside()
        coef = P.coef
        bsz, n_spec = coef.shape[:2]
        bias_lo, bias_hi = P.bias_lo, P.bias_hi
        if self.bias is not None:
            b = (coef.sum((-2, -1)) * self.bias).sum(-1)
            bias_lo = bias_lo + b
            bias_hi = bias_hi + b if bias_hi is not None else None
        s, pad_ = self.stride[0], self.padding[0]
        kk = self.weight.shape[-1]
        cin, hin, win = self.in_shape
        coef = transpose_patch(coef.reshape(bsz * n_spec, -1, P.k, P.k), self.weight, s, self.groups)
        k, pad, stride = (P.k - 1) * s + kk, P.pad * s + pad_, P.stride * s
        coef = coef.reshape(bsz, n_spec, cin, k, k)
        r0 = (P.pos // P.grid[1]) * stride - pad
        c0 = (P.pos % P.grid[1]) * stride - pad
        off = torch.arange(k, device=coef.device)
        rin = ((r0.unsqueeze(-1) + off) >= 0) & ((r0.unsqueeze(-1) + off) < hin)
        cinb = ((c0.unsqueeze(-1) + off) >= 0) & ((c0.unsqueeze(-1) + off) < win)
        inside = (rin.unsqueeze(-1) & cinb.unsqueeze(-2)).unsqueeze(2)
        return replace(P, coef=coef, k=k, stride=stride, pad=pad, bias_lo=bias_lo, bias_hi=bias_hi, outside=inside)


@dataclass(frozen=True, eq=False, kw_only=True)
class Affine(Layer):
    """Scale and shift per channel (eval BatchNorm, the input normalisation) or per neuron (an
    ONNX network's elementwise Mul/Add/Sub/Div by a constant)."""

    scale: torch.Tensor  # (C,) per channel, or the layer's shape per neuron
    shift: torch.Tensor

    per_neuron: ClassVar[bool] = True

    @property
    def per_channel(self) -> bool:
        return self.scale.dim() == 1 and self.shift.dim() == 1

    @property
    def has_patch_rule(self) -> bool:
        return len(self.shape) == 3 and self.per_channel

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        if t.dim() == 1:
            return t.view(-1, *([1] * (ndim - 1)))  # over (C, *spatial)
        return t  # the layer's own shape

    def forward(self, x):
        return x * self._view(self.scale, x.ndim - 1) + self._view(self.shift, x.ndim - 1)

    def interval(self, box):
        c, r = _centre_radius(box)
        c = self.forward(c)
        r = r * self._view(self.scale.abs(), r.ndim - 1)
        return c - r, c + r

    def back(self, A, relax=None):
        nd = len(self.shape)
        a = A * self._view(self.scale, nd)
        bias = (A * self._view(self.shift, nd)).flatten(2).sum(-1)
        return [a], bias

    def patch_back(self, P, relax=None):
        P = P.inside()
        b = (P.coef * self.shift.view(-1, 1, 1)).flatten(2).sum(-1)
        bias_lo, bias_hi = P.bias_lo + b, P.bias_hi + b if P.bias_hi is not None else None
        return replace(P, coef=P.coef * self.scale.view(-1, 1, 1), bias_lo=bias_lo, bias_hi=bias_hi)


@dataclass(frozen=True, eq=False, kw_only=True)
class Flatten(Layer):
    in_shape: tuple[int, ...]

    per_neuron: ClassVar[bool] = True

    def forward(self, x):
        return x.flatten(1)

    def interval(self, box):
        return box[0].flatten(1), box[1].flatten(1)

    def back(self, A, relax=None):
        return [A.reshape(*A.shape[:2], *self.in_shape)], None


@dataclass(frozen=True, eq=False, kw_only=True)
class Add(Layer):
    """The sum of two layers' outputs: a residual block."""

    def forward(self, a, b):
        return a + b

    def interval(self, box_a, box_b):
        return box_a[0] + box_b[0], box_a[1] + box_b[1]

    def back(self, A, relax=None):
        return [A, A], None


@dataclass(frozen=True, eq=False, kw_only=True)
class ReLU(Layer):
    per_neuron: ClassVar[bool] = True
    relaxed: ClassVar[bool] = True

    @property
    def has_patch_rule(self) -> bool:
        return len(self.shape) == 3

    def forward(self, x):
        return x.clamp_min(0)

    def interval(self, box):
        return box[0].clamp_min(0), box[1].clamp_min(0)

    def back(self, A, relax):
        """Positive coefficients take the lower line, negative ones the upper line:
        A sl + min(A, 0) (su - sl), and the upper line's intercepts where A < 0."""
        su, iu, sl = relax
        neg = A.clamp(max=0)
        return [torch.addcmul(A * sl, neg, su - sl)], _dot(neg, iu)

    def back_paired(self, A, relax):
        """Parallel lines (lower slope = upper slope): one coefficient, the intercept in the
        lower bound where the coefficient is negative and in the upper where it is positive."""
        su, iu, _ = relax
        neg = A.clamp(max=0)
        bias_lo, bias_hi = (neg * iu).flatten(2).sum(-1), ((A - neg) * iu).flatten(2).sum(-1)
        return [A * su], bias_lo, bias_hi

    def patch_back(self, P, relax, lower: torch.Tensor | None = None):
        """``back`` on patches: the relaxation maps (B, C, H, W) read on each patch's window (0
        outside the layer, so coefficients there vanish: ``Patches.outside`` is settled here).
        ``lower`` (B, S, C, K, K): each function's own lower slopes on its window, used where a
        neuron is unstable (alpha-CROWN's slopes per bounded neuron)."""
        su_m, iu_m, sl_m = relax
        coef = P.runs(P.coef)  # (B, runs, G, C K K): the windows broadcast over each run
        neg = coef.clamp(max=0)
        if P.bias_hi is not None:  # paired
            su, iu = P.windows(su_m, iu_m)
            bias_lo = P.bias_lo + rowdot(neg, iu).flatten(1)
            bias_hi = P.bias_hi + rowdot(coef - neg, iu).flatten(1)
            return replace(P, coef=(coef * su).view_as(P.coef), bias_lo=bias_lo, bias_hi=bias_hi, outside=None)
        if lower is not None:  # unstable where the upper line has an intercept or a slope in (0, 1)
            su, iu, sl = P.windows(su_m, iu_m, sl_m)
            unstable = (iu > 0) | ((su > 0) & (su < 1))
            sl = torch.where(unstable, P.runs(lower), sl)
            gap = su - sl
        else:
            iu, sl, gap = P.windows(iu_m, sl_m, su_m - sl_m)
        coef = torch.addcmul(coef * sl, neg, gap).view_as(P.coef)
        return replace(P, coef=coef, bias_lo=P.bias_lo + rowdot(neg, iu).flatten(1), outside=None)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over all but the first two dimensions of a * b, for a (B, S, *shape) and b (B, S or
    1, *shape): a matrix-vector product where b is shared by the S functions (no temporary)."""
    if b.shape[1] == 1 and b.shape[0] == a.shape[0]:
        return torch.bmm(a.flatten(2), b.flatten(2).transpose(1, 2)).squeeze(-1)
    return (a * b).flatten(2).sum(-1)
