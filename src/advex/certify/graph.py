"""A network as a small graph of the operations certifiers understand.

Every node knows its forward pass, its interval rule (IBP) and its linear back-substitution
rule (CROWN): the per-layer rule table of auto_LiRPA, for the layers certified training uses.
``trace`` reads an ``nn.Module`` (Sequential nests, the zoo's ``Residual`` blocks, and the
normalisation inside an advex ``Classifier``) into a list of nodes in execution order; any
other layer is a clear error naming it.

Linear bounds are kept as a coefficient tensor ``A`` of shape (B, S, *node_shape) -- S
specifications per input -- and a bias of shape (B, S).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from advex.errors import AdvexError

SUPPORTED = (
    "Linear, Conv2d (zero padding, no dilation), ReLU, Flatten, BatchNorm1d/2d (eval), AvgPool2d, "
    "AdaptiveAvgPool2d (to a divisor of the input), Identity, Dropout (eval), nn.Sequential, and the zoo's "
    "Residual blocks"
)


class UnsupportedLayer(AdvexError):
    """A layer the certifiers have no bound rule for."""


@dataclass
class Node:
    inputs: list[int]
    shape: tuple[int, ...] = ()  # output shape without the batch dimension
    name: str = ""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def ibp(self, *bounds: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def back(self, A: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Coefficients on each input and the bias added, for a linear node."""
        raise NotImplementedError


@dataclass
class Input(Node):
    def forward(self, x):
        return x


@dataclass
class LinearNode(Node):
    weight: torch.Tensor = None
    bias: torch.Tensor | None = None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def ibp(self, b):
        c, r = (b[0] + b[1]) / 2, (b[1] - b[0]) / 2
        c, r = F.linear(c, self.weight, self.bias), F.linear(r, self.weight.abs())
        return c - r, c + r

    def back(self, A):
        bias = A @ self.bias if self.bias is not None else None
        return [A @ self.weight], bias


@dataclass
class ConvNode(Node):
    weight: torch.Tensor = None
    bias: torch.Tensor | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    in_shape: tuple[int, ...] = ()

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, groups=self.groups)

    def ibp(self, b):
        c, r = (b[0] + b[1]) / 2, (b[1] - b[0]) / 2
        c = self.forward(c)
        r = F.conv2d(r, self.weight.abs(), None, self.stride, self.padding, groups=self.groups)
        return c - r, c + r

    def back(self, A):
        bsz, s = A.shape[:2]
        cout, ho, wo = A.shape[2:]
        cin, hi, wi = self.in_shape
        kh, kw = self.weight.shape[-2:]
        oph = hi - ((ho - 1) * self.stride[0] - 2 * self.padding[0] + kh)
        opw = wi - ((wo - 1) * self.stride[1] - 2 * self.padding[1] + kw)
        a = F.conv_transpose2d(
            A.reshape(bsz * s, cout, ho, wo), self.weight, None, self.stride, self.padding, (oph, opw), self.groups
        )
        bias = (A.sum((-2, -1)) * self.bias).sum(-1) if self.bias is not None else None
        return [a.reshape(bsz, s, cin, hi, wi)], bias


@dataclass
class AffineNode(Node):
    """Per-channel scale and shift: eval BatchNorm, and the input normalisation."""

    scale: torch.Tensor = None  # (C,)
    shift: torch.Tensor = None

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.view(-1, *([1] * (ndim - 1)))  # over (C, *spatial)

    def forward(self, x):
        return x * self._view(self.scale, x.ndim - 1) + self._view(self.shift, x.ndim - 1)

    def ibp(self, b):
        c, r = (b[0] + b[1]) / 2, (b[1] - b[0]) / 2
        c = self.forward(c)
        r = r * self._view(self.scale.abs(), r.ndim - 1)
        return c - r, c + r

    def back(self, A):
        nd = len(self.shape)
        a = A * self._view(self.scale, nd)
        bias = (A * self._view(self.shift, nd)).flatten(2).sum(-1)
        return [a], bias


@dataclass
class FlattenNode(Node):
    in_shape: tuple[int, ...] = ()

    def forward(self, x):
        return x.flatten(1)

    def ibp(self, b):
        return b[0].flatten(1), b[1].flatten(1)

    def back(self, A):
        return [A.reshape(*A.shape[:2], *self.in_shape)], None


@dataclass
class AddNode(Node):
    def forward(self, a, b):
        return a + b

    def ibp(self, ba, bb):
        return ba[0] + bb[0], ba[1] + bb[1]

    def back(self, A):
        return [A, A], None


@dataclass
class ReLUNode(Node):
    # pre-activation bounds (B, *shape), set by the bound computation
    lower: torch.Tensor | None = field(default=None, repr=False)
    upper: torch.Tensor | None = field(default=None, repr=False)

    def forward(self, x):
        return x.clamp_min(0)

    def ibp(self, b):
        return b[0].clamp_min(0), b[1].clamp_min(0)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _is_residual(m: nn.Module) -> bool:
    return hasattr(m, "body") and hasattr(m, "shortcut") and type(m).__name__ == "Residual"


@dataclass
class _Options:
    detach: bool  # False keeps the weights in the autograd graph (certified training)
    device: torch.device  # where the weights trace() makes (average pooling) go
    batch_stats: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # id(BatchNorm) -> (mean, var)

    def take(self, t: torch.Tensor | None) -> torch.Tensor | None:
        return (t.detach() if self.detach else t) if t is not None else None


def _trace(m: nn.Module, src: int, nodes: list[Node], path: str, opt: _Options) -> int:
    shape = nodes[src].shape
    name = f"{path} ({type(m).__name__})"
    if isinstance(m, nn.Sequential):
        for i, sub in enumerate(m):
            src = _trace(sub, src, nodes, f"{path}.{i}" if path else str(i), opt)
        return src
    if _is_residual(m):
        a = _trace(m.body, src, nodes, f"{path}.body", opt)
        b = _trace(m.shortcut, src, nodes, f"{path}.shortcut", opt)
        nodes.append(AddNode([a, b], nodes[a].shape, name))
        return len(nodes) - 1
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return src
    if isinstance(m, nn.Linear):
        if len(shape) != 1:
            raise UnsupportedLayer(f"{name} gets an input of shape {shape}; certifiers need Flatten before Linear")
        nodes.append(LinearNode([src], (m.out_features,), name, opt.take(m.weight), opt.take(m.bias)))
        return len(nodes) - 1
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or _pair(m.dilation) != (1, 1) or isinstance(m.padding, str):
            raise UnsupportedLayer(f"{name}: only zero padding given as numbers and no dilation are supported")
        node = ConvNode([src], (), name, opt.take(m.weight), opt.take(m.bias), _pair(m.stride), _pair(m.padding),
                        m.groups, shape)  # fmt: skip
        return _shaped(node, nodes)
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        stats = opt.batch_stats.get(id(m)) if opt.batch_stats is not None else None
        if stats is not None:  # certified training: the statistics of the clean batch (Shi et al. 2021)
            mean, var = stats
        elif m.training:
            raise UnsupportedLayer(f"{name} is in training mode; call model.eval() first")
        elif m.running_mean is None:
            raise UnsupportedLayer(f"{name} tracks no running statistics, so it is not an affine map in eval mode")
        else:
            mean, var = m.running_mean, m.running_var
        inv = (var + m.eps).rsqrt()
        w = opt.take(m.weight) if m.weight is not None else torch.ones_like(inv)
        b = opt.take(m.bias) if m.bias is not None else torch.zeros_like(inv)
        scale = w * inv
        nodes.append(AffineNode([src], shape, name, scale, b - mean * scale))
        return len(nodes) - 1
    if isinstance(m, nn.ReLU):
        nodes.append(ReLUNode([src], shape, name))
        return len(nodes) - 1
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedLayer(f"{name}: only Flatten(start_dim=1, end_dim=-1) is supported")
        nodes.append(FlattenNode([src], (int(torch.Size(shape).numel()),), name, shape))
        return len(nodes) - 1
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        c, h, w = shape
        if isinstance(m, nn.AdaptiveAvgPool2d):
            oh, ow = _pair(m.output_size)
            oh, ow = oh or h, ow or w
            if h % oh or w % ow:
                raise UnsupportedLayer(f"{name}: output size {(oh, ow)} must divide the input {(h, w)}")
            k, stride, pad = (h // oh, w // ow), (h // oh, w // ow), (0, 0)
        else:
            if m.ceil_mode or (not m.count_include_pad and _pair(m.padding) != (0, 0)) or m.divisor_override:
                raise UnsupportedLayer(f"{name}: ceil_mode, divisor_override and count_include_pad=False with "
                                       "padding are not supported")  # fmt: skip
            k, pad = _pair(m.kernel_size), _pair(m.padding)
            stride = _pair(m.stride) if m.stride is not None else k
        weight = torch.full((c, 1, *k), 1.0 / (k[0] * k[1]), device=opt.device)
        return _shaped(ConvNode([src], (), name, weight, None, stride, pad, c, shape), nodes)
    raise UnsupportedLayer(f"no bound rule for layer {name}; supported: {SUPPORTED}")


def _shaped(node: ConvNode, nodes: list[Node]) -> int:
    with torch.no_grad():
        z = torch.zeros(1, *node.in_shape, device=node.weight.device, dtype=node.weight.dtype)
        node.shape = tuple(
            F.conv2d(z, node.weight.detach(), None, node.stride, node.padding, groups=node.groups).shape[1:]
        )
    nodes.append(node)
    return len(nodes) - 1


def trace(
    model: nn.Module,
    in_shape: tuple[int, ...],
    *,
    detach: bool = True,
    batch_stats: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[Node]:
    """The nodes of ``model`` for inputs of shape ``in_shape`` (C, H, W): node 0 is the input,
    the last node the logits. An advex ``Classifier`` contributes its normalisation as an
    affine node; a resizing one is refused (give inputs of its input size). ``detach=False``
    keeps the weights differentiable (for certified training); ``batch_stats`` maps
    ``id(batchnorm)`` to the (mean, biased variance) a training-mode BatchNorm normalised the
    clean batch with (see :func:`batchnorm_stats`), making it that affine map."""
    from advex.models.classifier import Classifier

    nodes: list[Node] = [Input([], tuple(in_shape), "input")]
    p = next(iter(model.parameters()), None)
    opt = _Options(detach, p.device if p is not None else torch.device("cpu"), batch_stats)
    net = model
    src = 0
    if isinstance(model, Classifier):
        if model.resizes(*in_shape[-2:]):
            raise AdvexError(
                f"{model.name} resizes {in_shape[-2:]} inputs to {model.input_size}; certify inputs of its input size"
            )
        mean, std = model.mean.flatten(), model.std.flatten()
        c = in_shape[0]
        if mean.numel() == 1:
            mean, std = mean.expand(c), std.expand(c)
        if bool((mean != 0).any() or (std != 1).any()):
            nodes.append(AffineNode([0], tuple(in_shape), "normalisation", 1 / std, -mean / std))
            src = 1
        net = model.net
    _trace(net, src, nodes, "", opt)
    return nodes


@contextmanager
def batchnorm_stats(model: nn.Module):
    """Within the block, every forward pass of a training-mode BatchNorm of ``model`` records
    the batch mean and biased variance it normalised with, in the yielded dict (id -> stats;
    the last pass wins), differentiable; pass it to :func:`trace` as ``batch_stats``."""
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(m, args, _out):
        if m.training:
            x = args[0]
            dims = [0] + list(range(2, x.dim()))
            stats[id(m)] = (x.mean(dims), x.var(dims, unbiased=False))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


def forward(nodes: list[Node], x: torch.Tensor) -> list[torch.Tensor]:
    """Every node's output for input x (for checks)."""
    outs: list[torch.Tensor] = [x]
    for n in nodes[1:]:
        outs.append(n.forward(*(outs[i] for i in n.inputs)))
    return outs
