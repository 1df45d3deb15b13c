"""Tracing: an ``nn.Module`` read into the list of layers the certifiers have rules for.

``trace`` reads Sequential nests, the zoo's ``Residual`` blocks and the normalisation inside an
advex ``Classifier`` into :mod:`advex.certify.layers` in execution order; any other layer is a
clear error naming it. The traced list is never changed afterwards: every bound computation
keeps what it finds in its own call.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advex.certify import layers as L
from advex.errors import AdvexError
from advex.models import Classifier, Graph, Scale, Sum

SUPPORTED = (
    "Linear, Conv2d (zero padding, no dilation), ReLU, Flatten, BatchNorm1d/2d (eval), AvgPool2d, "
    "AdaptiveAvgPool2d (to a divisor of the input), Identity, Dropout (eval), nn.Sequential, the zoo's "
    "Residual blocks, and networks read from ONNX"
)


class UnsupportedLayer(AdvexError):
    """A layer the certifiers have no bound rule for."""


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


def _trace(m: nn.Module, src: int, nodes: list[L.Layer], path: str, opt: _Options) -> int:
    """Append the layers of module ``m`` reading layer ``src``; returns the index of its output."""
    if isinstance(m, nn.Sequential):
        for i, sub in enumerate(m):
            src = _trace(sub, src, nodes, f"{path}.{i}" if path else str(i), opt)
        return src
    name = f"{path} ({type(m).__name__})" if path else f"the network itself ({type(m).__name__})"
    if _is_residual(m):
        a = _trace(m.body, src, nodes, f"{path}.body", opt)
        b = _trace(m.shortcut, src, nodes, f"{path}.shortcut", opt)
        nodes.append(L.Add(inputs=(a, b), shape=nodes[a].shape, name=name))
        return len(nodes) - 1
    if isinstance(m, Graph):  # an ONNX network: its values mapped to layers
        at = [src]
        for i, (op, wire) in enumerate(zip(m.ops, m.wires)):
            sub = f"{path}.{m.names[i]}" if path else m.names[i]
            if isinstance(op, Sum):
                a, b = (at[j] for j in wire)
                nodes.append(L.Add(inputs=(a, b), shape=nodes[a].shape, name=f"{sub} (Add)"))
                at.append(len(nodes) - 1)
            else:
                at.append(_trace(op, at[wire[0]], nodes, sub, opt))
        return at[m.output]
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return src
    nodes.append(_layer(m, src, nodes[src].shape, name, opt))
    return len(nodes) - 1


def _layer(m: nn.Module, src: int, shape: tuple[int, ...], name: str, opt: _Options) -> L.Layer:
    """The layer for one leaf module reading layer ``src`` of output shape ``shape``."""
    at = {"inputs": (src,), "name": name}
    if isinstance(m, nn.Linear):
        if len(shape) != 1:
            raise UnsupportedLayer(f"{name} gets an input of shape {shape}; certifiers need Flatten before Linear")
        return L.Linear(**at, shape=(m.out_features,), weight=opt.take(m.weight), bias=opt.take(m.bias))
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or _pair(m.dilation) != (1, 1) or isinstance(m.padding, str):
            raise UnsupportedLayer(f"{name}: only zero padding given as numbers and no dilation are supported")
        return _conv(at, opt.take(m.weight), opt.take(m.bias), _pair(m.stride), _pair(m.padding), m.groups, shape)
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return _batchnorm(m, at, shape, opt)
    if isinstance(m, nn.ReLU):
        return L.ReLU(**at, shape=shape)
    if isinstance(m, Scale):
        return _elementwise(opt.take(m.scale), opt.take(m.shift), at, shape)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedLayer(f"{name}: only Flatten(start_dim=1, end_dim=-1) is supported")
        return L.Flatten(**at, shape=(int(torch.Size(shape).numel()),), in_shape=shape)
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return _avgpool(m, at, shape, opt)
    if next(m.children(), None) is not None:
        raise UnsupportedLayer(
            f"{name} is a module with its own forward(), which the certifiers cannot read; write it as an "
            f"nn.Sequential of supported layers ({SUPPORTED})"
        )
    raise UnsupportedLayer(f"no bound rule for layer {name}; supported: {SUPPORTED}")


def _conv(at: dict, weight, bias, stride, padding, groups, in_shape) -> L.Conv:
    with torch.no_grad():
        z = torch.zeros(1, *in_shape, device=weight.device, dtype=weight.dtype)
        shape = tuple(F.conv2d(z, weight.detach(), None, stride, padding, groups=groups).shape[1:])
    return L.Conv(**at, shape=shape, weight=weight, bias=bias, stride=stride, padding=padding, groups=groups,
                  in_shape=in_shape)  # fmt: skip


def _batchnorm(m: nn.Module, at: dict, shape: tuple[int, ...], opt: _Options) -> L.Affine:
    """Eval BatchNorm (or, in certified training, one normalising with the clean batch's
    statistics; Shi et al. 2021) as the per-channel affine map it is."""
    stats = opt.batch_stats.get(id(m)) if opt.batch_stats is not None else None
    if stats is not None:
        mean, var = stats
    elif m.training:
        raise UnsupportedLayer(f"{at['name']} is in training mode; call model.eval() first")
    elif m.running_mean is None:
        raise UnsupportedLayer(f"{at['name']} tracks no running statistics, so it is not an affine map in eval mode")
    else:
        mean, var = m.running_mean, m.running_var
    inv = (var + m.eps).rsqrt()
    w = opt.take(m.weight) if m.weight is not None else torch.ones_like(inv)
    b = opt.take(m.bias) if m.bias is not None else torch.zeros_like(inv)
    scale = w * inv
    return L.Affine(**at, shape=shape, scale=scale, shift=b - mean * scale)


def _elementwise(scale: torch.Tensor, shift: torch.Tensor, at: dict, shape: tuple[int, ...]) -> L.Affine:
    """x * scale + shift with broadcasting, per channel (C,) when it is, else per neuron."""
    full = [t.expand(shape).contiguous() for t in (scale, shift)]
    flat = [t.reshape(shape[0], -1) for t in full]
    if all(bool((f == f[:, :1]).all()) for f in flat):
        return L.Affine(**at, shape=shape, scale=flat[0][:, 0].clone(), shift=flat[1][:, 0].clone())
    return L.Affine(**at, shape=shape, scale=full[0], shift=full[1])


def _avgpool(m: nn.Module, at: dict, shape: tuple[int, ...], opt: _Options) -> L.Conv:
    """Average pooling as a convolution with one constant kernel per channel."""
    c, h, w = shape
    if isinstance(m, nn.AdaptiveAvgPool2d):
        oh, ow = _pair(m.output_size)
        oh, ow = oh or h, ow or w
        if h % oh or w % ow:
            raise UnsupportedLayer(f"{at['name']}: output size {(oh, ow)} must divide the input {(h, w)}")
        k, stride, pad = (h // oh, w // ow), (h // oh, w // ow), (0, 0)
    else:
        if m.ceil_mode or (not m.count_include_pad and _pair(m.padding) != (0, 0)) or m.divisor_override:
            raise UnsupportedLayer(f"{at['name']}: ceil_mode, divisor_override and count_include_pad=False with "
                                   "padding are not supported")  # fmt: skip
        k, pad = _pair(m.kernel_size), _pair(m.padding)
        stride = _pair(m.stride) if m.stride is not None else k
    weight = torch.full((c, 1, *k), 1.0 / (k[0] * k[1]), device=opt.device)
    return _conv(at, weight, None, stride, pad, c, shape)


def trace(
    model: nn.Module,
    in_shape: tuple[int, ...],
    *,
    detach: bool = True,
    batch_stats: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[L.Layer]:
    """The layers of ``model`` for inputs of shape ``in_shape`` (C, H, W): layer 0 is the input,
    the last one the logits. An advex ``Classifier`` contributes its normalisation as an
    affine layer; a resizing one is refused (give inputs of its input size). ``detach=False``
    keeps the weights differentiable (for certified training); ``batch_stats`` maps
    ``id(batchnorm)`` to the (mean, biased variance) a training-mode BatchNorm normalised the
    clean batch with (see :func:`batchnorm_stats`), making it that affine map."""
    nodes: list[L.Layer] = [L.Input(inputs=(), shape=tuple(in_shape), name="input")]
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
            nodes.append(L.Affine(inputs=(0,), shape=tuple(in_shape), name="normalisation", scale=1 / std,
                                  shift=-mean / std))  # fmt: skip
            src = 1
        net = model.net
    _trace(net, src, nodes, "", opt)
    return nodes


@contextmanager
def batchnorm_stats(model: nn.Module):
    """Within the block, every forward pass of a training-mode BatchNorm of ``model`` records
    the batch mean and biased variance it normalised with, in the yielded dict (id -> stats;
    the last pass wins), differentiable; pass it to :func:`trace` as ``batch_stats``, or to
    :func:`~advex.certify.worst_case_logits`."""
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
