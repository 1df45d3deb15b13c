"""ONNX networks (the verification community's format) read into a PyTorch module.

``load_onnx(path)`` reads a network of the operators certification has rules for -- Gemm,
MatMul (by a constant), Add, Sub, Mul, Div (by a constant, or Add of two branches: a residual
block), Conv, Relu, Flatten, Reshape (to one vector per sample), BatchNormalization (eval),
AveragePool, GlobalAveragePool, Identity, Dropout and Constant -- into a :class:`Graph` of
standard torch modules that runs batched on any device and that :func:`advex.certify.trace`
reads layer by layer. Any other operator, or an attribute these rules do not cover, is an
:class:`OnnxError` naming the node. The ``onnx`` package is needed only here (``pip install
onnx``); nothing is executed from the file but these operators.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advex.errors import AdvexError

OPERATORS = (
    "Gemm, MatMul, Add, Sub, Mul, Div, Conv, Relu, Flatten, Reshape, BatchNormalization, AveragePool, "
    "GlobalAveragePool, Identity, Dropout, Constant"
)


class OnnxError(AdvexError):
    """An ONNX file that cannot be read, or a node outside the supported operators."""


class Scale(nn.Module):
    """x * scale + shift, elementwise with broadcasting (a constant Mul/Div/Add/Sub)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x):
        return x * self.scale + self.shift


class Sum(nn.Module):
    """The sum of two branches."""

    def forward(self, a, b):
        return a + b


class Graph(nn.Module):
    """A network as a list of modules in execution order: ``ops[i]`` reads the values
    ``wires[i]`` (0 is the input, i + 1 the output of ``ops[i]``); value ``output`` is the
    network's. ``in_shape`` is one sample's input shape (without the batch dimension)."""

    def __init__(self, ops: list[nn.Module], wires: list[tuple[int, ...]], output: int, in_shape: tuple[int, ...],
                 names: list[str]) -> None:  # fmt: skip
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.wires, self.output, self.in_shape, self.names = [tuple(w) for w in wires], output, tuple(in_shape), names

    def forward(self, x):
        values = [x.reshape(x.shape[0], *self.in_shape)]
        for op, wire in zip(self.ops, self.wires):
            values.append(op(*(values[j] for j in wire)))
        return values[self.output]

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}"


def onnx_package():
    """The ``onnx`` package and its ``numpy_helper``, or a clear error naming the install."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise OnnxError("reading ONNX networks needs the onnx package: pip install onnx") from None
    return onnx, numpy_helper


def _attrs(node) -> dict:
    onnx, numpy_helper = onnx_package()
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


def load_onnx(path: str | Path) -> Graph:
    """The network in the ONNX file ``path`` (gzipped if it ends in .gz) as a :class:`Graph`
    (eval mode, fp32, on the CPU).
    Its one input's first dimension is the batch."""
    onnx, numpy_helper = onnx_package()
    path = Path(path)
    if not path.is_file():
        raise OnnxError(f"no ONNX file at {path}")
    try:
        if path.suffix == ".gz":  # VNN-COMP's benchmark sets ship them gzipped
            with gzip.open(path, "rb") as f:
                model = onnx.load_model_from_string(f.read())
        else:
            model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's own message
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise OnnxError(f"{path} is not an ONNX model: {why}") from None
    return _Reader(model.graph, path.name, numpy_helper).graph()


class _Reader:
    def __init__(self, g, where: str, numpy_helper) -> None:
        self.g, self.where = g, where
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1 or len(g.output) != 1:
            raise OnnxError(f"{where}: the network must have one input and one output, it has {len(inputs)} and "
                            f"{len(g.output)}")  # fmt: skip
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
        self.unbatched = len(dims) == 1 and dims[0] is not None and dims[0] > 0
        if self.unbatched:  # one vector, no batch dimension (some VNN-COMP networks): a batch of one
            dims = [1, *dims]
        if len(dims) < 2 or any(d is None or d <= 0 for d in dims[1:]):
            raise OnnxError(f"{where}: the input {inputs[0].name!r} has shape {dims}; a batch dimension and then "
                            "fixed sizes are needed")  # fmt: skip
        self.in_shape = tuple(dims[1:])
        self.values = {inputs[0].name: 0}  # name -> index into the graph's values
        self.example = [torch.zeros(1, *self.in_shape)]  # one sample of each value (its shape)
        self.ops: list[nn.Module] = []
        self.wires: list[tuple[int, ...]] = []
        self.names: list[str] = []
        self.input_name = inputs[0].name
        self.readers: dict[str, int] = {}  # value name -> how many nodes read it (and the output)
        for n in [*(i for node in g.node for i in node.input), g.output[0].name]:
            self.readers[n] = self.readers.get(n, 0) + 1

    def graph(self) -> Graph:
        for node in self.g.node:
            self.read(node)
        out = self.g.output[0].name
        if out not in self.values:
            raise OnnxError(f"{self.where}: the output {out!r} is a constant or is made by no node")
        net = Graph(self.ops, self.wires, self.values[out], self.in_shape, self.names).eval()
        return net

    # ------------------------------------------------------------------ helpers
    def fail(self, node, why: str):
        raise OnnxError(f"{self.where}: node {node.name or node.output[0]!r} ({node.op_type}): {why}")

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.example[self.values[name]].shape[1:])

    def const(self, node, name: str) -> np.ndarray:
        if name not in self.consts:
            self.fail(node, f"input {name!r} must be a constant (an initializer or a Constant node)")
        return self.consts[name]

    def add(self, node, op: nn.Module, *names: str) -> None:
        wire = tuple(self.values[n] for n in names)
        with torch.no_grad():
            try:
                out = op(*(self.example[j] for j in wire))
            except RuntimeError as e:
                self.fail(node, f"does not apply to inputs of shape {[self.shape(n) for n in names]}: "
                                f"{str(e).splitlines()[0]}")  # fmt: skip
        self.ops.append(op)
        self.wires.append(wire)
        self.names.append(node.name or node.output[0])
        self.example.append(out)
        self.values[node.output[0]] = len(self.example) - 1

    def alias(self, node, name: str) -> None:
        self.values[node.output[0]] = self.values[name]

    @staticmethod
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.array(a, dtype=np.float32))

    def per_sample(self, node, c: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        """A constant operand broadcast against one sample of ``shape``: its batch dimension (if
        any) dropped; a constant that would change the batch or the shape is refused."""
        t = self.tensor(c)
        if t.dim() > len(shape):
            if t.dim() != len(shape) + 1 or t.shape[0] != 1:
                self.fail(node, f"a constant of shape {tuple(c.shape)} does not broadcast per sample over {shape}")
            t = t[0]
        try:
            if torch.broadcast_shapes(t.shape, shape) != torch.Size(shape):
                raise RuntimeError
        except RuntimeError:
            self.fail(node, f"a constant of shape {tuple(c.shape)} does not broadcast over inputs of shape {shape}")
        return t

    # ------------------------------------------------------------------ operators
    def read(self, node) -> None:
        op, ins, a = node.op_type, [i for i in node.input], _attrs(node)
        if len(node.output) < 1:
            self.fail(node, "has no output")
        if op == "Constant":
            if "value" in a:
                self.consts[node.output[0]] = np.asarray(a["value"])
            elif "value_float" in a or "value_floats" in a or "value_int" in a or "value_ints" in a:
                key = next(k for k in ("value_float", "value_floats", "value_int", "value_ints") if k in a)
                self.consts[node.output[0]] = np.asarray(a[key])
            else:
                self.fail(node, f"only tensor and number constants are supported, got {sorted(a)}")
            return
        computed = [i for i in ins if i and i in self.values]
        if not computed:
            return self.fold_constants(node, op, ins)
        if op in ("Identity", "Dropout"):
            return self.alias(node, ins[0])
        if op == "Relu":
            return self.add(node, nn.ReLU(), ins[0])
        if op == "Flatten":
            if a.get("axis", 1) != 1:
                self.fail(node, f"only axis=1 is supported, got axis={a['axis']}")
            if len(self.shape(ins[0])) == 1:
                return self.alias(node, ins[0])
            return self.add(node, nn.Flatten(), ins[0])
        if op == "Reshape":
            return self.reshape(node, ins)
        if op == "Gemm":
            return self.gemm(node, ins, a)
        if op == "MatMul":
            return self.matmul(node, ins)
        if op in ("Add", "Sub", "Mul", "Div"):
            return self.elementwise(node, op, ins)
        if op == "Conv":
            return self.conv(node, ins, a)
        if op == "BatchNormalization":
            return self.batchnorm(node, ins, a)
        if op in ("AveragePool", "GlobalAveragePool"):
            return self.avgpool(node, op, ins, a)
        self.fail(node, f"operator {op} is not supported; supported: {OPERATORS}")

    def fold_constants(self, node, op: str, ins) -> None:
        """A node of constants only (an exporter's Identity of a shared weight, say) is
        evaluated here, for the operators that can be."""
        xs = [self.const(node, i) for i in ins if i]
        if op in ("Identity", "Dropout"):
            out = xs[0]
        elif op in ("Add", "Sub", "Mul", "Div"):
            out = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](xs[0], xs[1])
        elif op == "Reshape":
            out = xs[0].reshape([int(v) for v in xs[1].reshape(-1)])
        else:
            self.fail(node, f"reads only constants, and {op} of constants is not folded here; fold it before export")
        self.consts[node.output[0]] = np.asarray(out)

    def reshape(self, node, ins) -> None:
        target = [int(v) for v in self.const(node, ins[1]).reshape(-1)]
        shape = self.shape(ins[0])
        n = int(np.prod(shape))
        rest = target[1:]
        if len(target) == 2 and (rest[0] in (-1, n)) and target[0] in (-1, 0, 1):
            return self.alias(node, ins[0]) if len(shape) == 1 else self.add(node, nn.Flatten(), ins[0])
        if len(target) >= 2 and target[0] in (-1, 0, 1) and rest == list(shape):
            return self.alias(node, ins[0])
        self.fail(node, f"a Reshape of {shape} to {target}; only flattening to (batch, {n}) is supported")

    def _linear(self, node, weight: np.ndarray, bias: np.ndarray | None, src: str) -> None:
        shape = self.shape(src)
        if len(shape) != 1:
            self.fail(node, f"its input has shape {shape}; a matrix product needs a vector per sample (Flatten first)")
        w = self.tensor(weight)
        if w.dim() != 2 or w.shape[1] != shape[0]:
            self.fail(node, f"a weight of shape {tuple(weight.shape)} does not fit inputs of size {shape[0]}")
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        with torch.no_grad():
            lin.weight.copy_(w)
            if bias is not None:
                lin.bias.copy_(self.tensor(bias).reshape(-1).expand(w.shape[0]))
        self.add(node, lin, src)

    def gemm(self, node, ins, a) -> None:
        if a.get("transA", 0):
            self.fail(node, "transA=1 is not supported")
        if ins[0] not in self.values:
            self.fail(node, "its first input must be the computed value, its second a constant")
        b = self.const(node, ins[1]).astype(np.float64)
        w = (b if a.get("transB", 0) else b.T) * a.get("alpha", 1.0)
        c = self.const(node, ins[2]).astype(np.float64) * a.get("beta", 1.0) if len(ins) > 2 and ins[2] else None
        if c is not None and c.size not in (1, w.shape[0]):
            self.fail(node, f"a bias of shape {tuple(c.shape)} does not fit {w.shape[0]} outputs")
        self._linear(node, w, c, ins[0])

    def matmul(self, node, ins) -> None:
        """x W (a computed value times a constant matrix), or W x where x is one unbatched vector
        (a network with no batch dimension): both a Linear layer."""
        left = ins[0] not in self.values and ins[1] in self.values and self.unbatched
        if not left and (ins[0] not in self.values or ins[1] in self.values):
            self.fail(node, "only a computed value times a constant matrix is supported (or a constant matrix "
                            "times an unbatched vector)")  # fmt: skip
        w = self.const(node, ins[0] if left else ins[1])
        if w.ndim != 2:
            self.fail(node, f"the constant must be a matrix, got shape {tuple(w.shape)}")
        self._linear(node, w if left else w.T, None, ins[1] if left else ins[0])

    def elementwise(self, node, op: str, ins) -> None:
        x_first = ins[0] in self.values
        if ins[0] in self.values and ins[1] in self.values:
            if op != "Add":
                self.fail(node, f"{op} of two computed values is not supported (Add of two is: a residual block)")
            if self.shape(ins[0]) != self.shape(ins[1]):
                self.fail(node, f"adds values of shapes {self.shape(ins[0])} and {self.shape(ins[1])}")
            return self.add(node, Sum(), ins[0], ins[1])
        src, other = (ins[0], ins[1]) if x_first else (ins[1], ins[0])
        shape = self.shape(src)
        c = self.per_sample(node, self.const(node, other), shape).double()
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        if op == "Add":
            scale, shift = one, c
        elif op == "Sub":
            scale, shift = (one, -c) if x_first else (-one, c)
        elif op == "Mul":
            scale, shift = c, zero
        else:
            if not x_first:
                self.fail(node, "a constant divided by a computed value is not supported")
            if bool((c == 0).any()):
                self.fail(node, "divides by zero")
            scale, shift = 1 / c, zero
        if not self.fold(src, scale, shift):
            self.add(node, Scale(scale.float(), shift.float()), src)
        else:
            self.alias(node, src)

    def fold(self, src: str, scale: torch.Tensor, shift: torch.Tensor) -> bool:
        """Fold x * scale + shift into the Scale or Linear that makes ``src`` when nothing else
        reads it (Sub then Div: one affine map; MatMul then Add: one Linear)."""
        j = self.values[src] - 1
        if j < 0 or self.readers.get(src, 0) != 1:
            return False
        op = self.ops[j]
        if isinstance(op, Scale):
            self.ops[j] = Scale((op.scale.double() * scale).float(), (op.shift.double() * scale + shift).float())
        elif isinstance(op, nn.Linear) and scale.dim() <= 1 and shift.dim() <= 1:
            n = op.out_features
            scale, shift = scale.expand(n), shift.expand(n)
            with torch.no_grad():
                bias = op.bias.double() if op.bias is not None else torch.zeros(n, dtype=torch.float64)
                lin = nn.Linear(op.in_features, n)
                lin.weight.copy_(op.weight.double() * scale.unsqueeze(1))
                lin.bias.copy_(bias * scale + shift)
            self.ops[j] = lin
        else:
            return False
        with torch.no_grad():
            self.example[j + 1] = self.ops[j](*(self.example[k] for k in self.wires[j]))
        return True

    def conv(self, node, ins, a) -> None:
        w = self.tensor(self.const(node, ins[1]))
        b = self.tensor(self.const(node, ins[2])) if len(ins) > 2 and ins[2] else None
        shape = self.shape(ins[0])
        if w.dim() != 4 or len(shape) != 3:
            self.fail(node, f"only 2-d convolutions of (C, H, W) inputs are supported, got weight {tuple(w.shape)} "
                            f"and input {shape}")  # fmt: skip
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            self.fail(node, f"auto_pad={a['auto_pad']} is not supported; give explicit pads")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(node, f"dilations {a['dilations']} are not supported")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:]:
            self.fail(node, f"asymmetric pads {pads} are not supported")
        groups = int(a.get("group", 1))
        conv = nn.Conv2d(shape[0], w.shape[0], tuple(w.shape[-2:]), stride=tuple(a.get("strides", [1, 1])),
                         padding=tuple(pads[:2]), groups=groups, bias=b is not None)  # fmt: skip
        if conv.weight.shape != w.shape:
            self.fail(node, f"a weight of shape {tuple(w.shape)} does not fit {shape[0]} input channels")
        with torch.no_grad():
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b)
        self.add(node, conv, ins[0])

    def batchnorm(self, node, ins, a) -> None:
        gamma, beta, mean, var = (self.const(node, n).astype(np.float64) for n in ins[1:5])
        if a.get("training_mode", 0):
            self.fail(node, "training_mode=1 is not supported")
        scale = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
        shape = self.shape(ins[0])
        view = (-1,) + (1,) * (len(shape) - 1)
        shift = beta - mean * scale
        self.add(node, Scale(self.tensor(scale.reshape(view)), self.tensor(shift.reshape(view))), ins[0])

    def avgpool(self, node, op: str, ins, a) -> None:
        if op == "GlobalAveragePool":
            return self.add(node, nn.AdaptiveAvgPool2d(1), ins[0])
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:] or a.get("ceil_mode", 0) or a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            self.fail(node, "only symmetric explicit pads without ceil_mode are supported")
        if any(pads) and not a.get("count_include_pad", 0):
            self.fail(node, "padding with count_include_pad=0 is not supported")
        k = tuple(a["kernel_shape"])
        self.add(node, nn.AvgPool2d(k, stride=tuple(a.get("strides", k)), padding=tuple(pads[:2])), ins[0])
