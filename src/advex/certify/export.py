"""A network written to ONNX as the certifiers read it: :func:`export_onnx` traces the model
(:func:`~advex.certify.trace`, normalisation included) and writes one ONNX node per layer --
Gemm, Conv, Relu, Flatten, Add, and Mul/Add for per-channel scales (BatchNorm, normalisation) --
so what a verifier reads from the file is what advex verifies, and
:func:`advex.models.load_onnx` reads it back to the same layers. Pixels in [0, 1] go in, logits
come out; the batch dimension is free."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from advex.certify import layers as L
from advex.certify.graph import trace
from advex.data import atomic_write_bytes
from advex.errors import AdvexError
from advex.models import OnnxError, onnx_package

OPSET = 13


def export_onnx(model: nn.Module, path: str | Path, in_shape: tuple[int, ...]) -> Path:
    """Write ``model`` for inputs of shape ``in_shape`` (C, H, W) to the ONNX file ``path``
    (written whole or not at all); returns the path."""
    onnx, numpy_helper = onnx_package()
    helper = onnx.helper
    nodes = trace(model, tuple(in_shape))
    inits, graph_nodes = [], []
    names = ["input"]

    def const(name: str, t: torch.Tensor) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(t.detach().cpu().float().numpy()), name))
        return name

    for i, n in enumerate(nodes[1:], 1):
        out = f"l{i}"
        src = [names[j] for j in n.inputs]
        if isinstance(n, L.Linear):
            ins = [src[0], const(f"l{i}.weight", n.weight)]
            if n.bias is not None:
                ins.append(const(f"l{i}.bias", n.bias))
            graph_nodes.append(helper.make_node("Gemm", ins, [out], name=f"l{i}", transB=1))
        elif isinstance(n, L.Conv):
            ins = [src[0], const(f"l{i}.weight", n.weight)]
            if n.bias is not None:
                ins.append(const(f"l{i}.bias", n.bias))
            kh, kw = n.weight.shape[-2:]
            graph_nodes.append(helper.make_node(
                "Conv", ins, [out], name=f"l{i}", kernel_shape=[kh, kw], strides=list(n.stride),
                pads=[*n.padding, *n.padding], group=n.groups,
            ))  # fmt: skip
        elif isinstance(n, L.Affine):
            view = (-1,) + (1,) * (len(n.shape) - 1) if n.per_channel else n.shape
            scale, shift = n.scale.reshape(view), n.shift.reshape(view)
            graph_nodes.append(helper.make_node("Mul", [src[0], const(f"l{i}.scale", scale)], [f"l{i}.scaled"],
                                                name=f"l{i}.mul"))  # fmt: skip
            graph_nodes.append(helper.make_node("Add", [f"l{i}.scaled", const(f"l{i}.shift", shift)], [out],
                                                name=f"l{i}.add"))  # fmt: skip
        elif isinstance(n, L.ReLU):
            graph_nodes.append(helper.make_node("Relu", src, [out], name=f"l{i}"))
        elif isinstance(n, L.Flatten):
            graph_nodes.append(helper.make_node("Flatten", src, [out], name=f"l{i}", axis=1))
        elif isinstance(n, L.Add):
            graph_nodes.append(helper.make_node("Add", src, [out], name=f"l{i}"))
        else:  # every traced layer type is above; a new one needs its line here
            raise OnnxError(f"no ONNX export for layer {n.name} ({type(n).__name__})")
        names.append(out)
    graph_nodes[-1].output[0] = "logits"
    k = nodes[-1].shape[0]
    graph = helper.make_graph(
        graph_nodes, getattr(model, "name", None) or type(model).__name__,
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", *in_shape])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", k])], inits,
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="advex")
    proto.ir_version = 8  # readable by onnxruntime >= 1.10
    onnx.checker.check_model(proto)
    path = Path(path)
    if path.is_dir():
        raise AdvexError(f"{path} is a directory; give the ONNX file to write")
    if not path.parent.is_dir():
        raise AdvexError(f"cannot write {path}: no directory {path.parent}")
    atomic_write_bytes(path, proto.SerializeToString())
    return path
