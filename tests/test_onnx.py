"""ONNX in and out: networks torch's own exporter writes, networks written node by node (the
MatMul/Add/Reshape/Constant style of VNN-COMP's files), and advex's export, read back to the
same outputs and the same bounds; every unsupported node a clear error naming it."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advex.certify import bounds, trace
from advex.certify.export import export_onnx
from advex.models import Classifier, archs, load
from advex.models.onnx import Graph, OnnxError, load_onnx

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def torch_export(model: nn.Module, shape, path) -> None:
    """torch's TorchScript exporter (what most ONNX files of PyTorch networks come from)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, *shape),), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}})  # fmt: skip


def resnet() -> nn.Module:
    """The zoo's ResNet architecture (residual blocks, a strided 1x1 shortcut, BatchNorm, average
    pooling, CIFAR-10's normalisation), narrow and on 16x16 inputs so CROWN's dense path through
    the residual adds stays small, with random weights and BatchNorm statistics that are not the
    identity."""
    from advex.data import STATS

    torch.manual_seed(0)
    mean, std = STATS["cifar10"]
    m = Classifier(archs.resnet(3, 16, 10, width=8, blocks=(1, 1)), mean=mean, std=std, input_size=(16, 16),
                   channels=3, classes=[str(i) for i in range(10)], name="resnet-narrow")  # fmt: skip
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def runtime_outputs(path, x: np.ndarray) -> np.ndarray:
    """The outputs onnxruntime (an independent engine) computes for the file, one sample at a
    time (many of the files fix the batch to 1)."""
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    return np.stack([sess.run(None, {inp.name: xi.reshape(shape).astype(np.float32)})[0].reshape(-1) for xi in x])


def agrees_with_onnxruntime(path, net: Graph) -> None:
    x = np.random.default_rng(2).uniform(0, 1, size=(4, *net.in_shape)).astype(np.float32)
    with torch.no_grad():
        ours = net(torch.from_numpy(x)).numpy().reshape(4, -1)
    assert np.allclose(ours, runtime_outputs(path, x), atol=1e-4, rtol=1e-4)


def same_network(a: nn.Module, b: nn.Module, shape, eps=2 / 255) -> None:
    x = torch.rand(6, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-4, rtol=1e-4)
    for method in ("ibp", "crown"):
        ba, bb = bounds(a, x, eps=eps, method=method), bounds(b, x, eps=eps, method=method)
        assert torch.allclose(ba.lower, bb.lower, atol=1e-3, rtol=1e-4), method
        assert torch.allclose(ba.upper, bb.upper, atol=1e-3, rtol=1e-4), method


@pytest.mark.parametrize("name", ["cifar10-small", "mnist-small-pgd", "resnet"])
def test_networks_torch_exports_read_back_to_the_same_outputs_and_bounds(tmp_path, name):
    model = resnet() if name == "resnet" else load(name).eval()
    shape = {"mnist-small-pgd": (1, 28, 28), "resnet": (3, 16, 16)}.get(name, (3, 32, 32))
    torch_export(model, shape, tmp_path / "net.onnx")
    net = load_onnx(tmp_path / "net.onnx")
    assert isinstance(net, Graph) and net.in_shape == shape
    agrees_with_onnxruntime(tmp_path / "net.onnx", net)
    same_network(model, net, shape)


@pytest.mark.parametrize("name", ["mnist-small-ibp-0.1", "cifar10-small", "resnet"])
def test_advex_export_reads_back_to_the_same_layers(tmp_path, name):
    model = resnet() if name == "resnet" else load(name).eval()
    shape = {"mnist-small-ibp-0.1": (1, 28, 28), "resnet": (3, 16, 16)}.get(name, (3, 32, 32))
    export_onnx(model, tmp_path / "m.onnx", shape)
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))
    net = load_onnx(tmp_path / "m.onnx")
    agrees_with_onnxruntime(tmp_path / "m.onnx", net)
    ours, theirs = trace(model, shape), trace(net, shape)
    assert [type(n).__name__ for n in ours] == [type(n).__name__ for n in theirs]
    assert [n.inputs for n in ours] == [n.inputs for n in theirs]  # the residual wiring too
    same_network(model, net, shape)


def _vnncomp_style(path, batch_dim="batch"):
    """An ACAS-Xu-shaped network written node by node: input (1, 1, 1, 5), normalised by Sub and
    Div constants, Reshape by a Constant shape, MatMul + Add layers, a Constant node for a bias."""
    g = np.random.default_rng(0)
    w1, b1 = g.normal(size=(5, 8)).astype(np.float32), g.normal(size=8).astype(np.float32)
    w2, b2 = g.normal(size=(8, 5)).astype(np.float32), g.normal(size=5).astype(np.float32)
    mean, rng = np.array([0.1, -0.2, 0.3, 0.0, 0.5], np.float32), np.float32(2.0)
    init = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (mean, "mean"),
                                                       (np.array(rng), "range"))]  # fmt: skip
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["s"]),
        helper.make_node("Div", ["s", "range"], ["n"]),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, -1], np.int64))),
        helper.make_node("Reshape", ["n", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["o0"]),
        helper.make_node("Constant", [], ["b2"], value=numpy_helper.from_array(b2)),
        helper.make_node("Add", ["b2", "o0"], ["y"], name="last"),
    ]
    graph = helper.make_graph(nodes, "acas-like", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                              [batch_dim, 1, 1, 5])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              init)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))

    def reference(x: np.ndarray) -> np.ndarray:
        n = ((x - mean) / rng).reshape(len(x), -1)
        return np.maximum(n @ w1 + b1, 0) @ w2 + b2

    return reference


def test_a_network_written_node_by_node_in_the_vnncomp_style(tmp_path):
    reference = _vnncomp_style(tmp_path / "acas.onnx", batch_dim=1)
    net = load_onnx(tmp_path / "acas.onnx")
    x = np.random.default_rng(1).uniform(-1, 1, size=(7, 1, 1, 5)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()  # batched, though the file says batch 1
    assert np.allclose(got, reference(x), atol=1e-5)
    assert np.allclose(got.reshape(7, -1), runtime_outputs(tmp_path / "acas.onnx", x), atol=1e-5)
    kinds = [type(n).__name__ for n in trace(net, (1, 1, 5))]
    assert kinds == ["Input", "Affine", "Flatten", "Linear", "ReLU", "Linear"]  # Sub+Div one map, MatMul+Add one Linear
    samples = 0.4 + 0.2 * torch.rand(2000, 1, 1, 5)  # the L-inf ball of radius 0.1 around 0.5
    b = bounds(net, torch.full((1, 1, 1, 5), 0.5), eps=0.1, method="crown")
    with torch.no_grad():
        z = net(samples)
    assert (z >= b.lower - 1e-5).all() and (z <= b.upper + 1e-5).all()


def test_an_unbatched_network_with_the_matrix_on_the_left(tmp_path):
    """Input of shape [2] (no batch dimension), layers W x + b (VNN-COMP's test networks)."""
    g = np.random.default_rng(3)
    w0, b0, w1 = (g.normal(size=s).astype(np.float32) for s in ((4, 2), (4,), (3, 4)))
    nodes = [
        helper.make_node("MatMul", ["W0", "X"], ["m0"]),
        helper.make_node("Add", ["m0", "B0"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["r0"]),
        helper.make_node("MatMul", ["W1", "r0"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(a, n) for a, n in ((w0, "W0"), (b0, "B0"), (w1, "W1"))],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "t.onnx"))
    net = load_onnx(tmp_path / "t.onnx")
    assert net.in_shape == (2,)
    x = g.uniform(-1, 1, size=(5, 2)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    assert np.allclose(got, np.maximum(x @ w0.T + b0, 0) @ w1.T, atol=1e-5)
    assert np.allclose(got, runtime_outputs(tmp_path / "t.onnx", x), atol=1e-5)


def _one_node(path, op, inputs, attrs=None, inits=(), in_shape=("batch", 4), out_shape=("batch", 4), name="n0"):
    graph = helper.make_graph(
        [helper.make_node(op, ["x", *inputs], ["y"], name=name, **(attrs or {}))], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_unsupported_nodes_are_named(tmp_path):
    w = [("w", np.ones((2, 1, 3, 3), np.float32))]
    cases = [
        (_one_node(tmp_path / "a.onnx", "Sigmoid", []), r"node 'n0' \(Sigmoid\): operator Sigmoid is not supported"),
        (_one_node(tmp_path / "b.onnx", "Conv", ["w"], {"pads": [0, 0, 1, 1]}, w,
                   in_shape=("batch", 1, 5, 5)), r"asymmetric pads \[0, 0, 1, 1\]"),
        (_one_node(tmp_path / "c.onnx", "Conv", ["w"], {"dilations": [2, 2]}, w,
                   in_shape=("batch", 1, 5, 5)), r"dilations \[2, 2\] are not supported"),
        (_one_node(tmp_path / "d.onnx", "Mul", ["x"]), r"\(Mul\): Mul of two computed values is not supported"),
        (_one_node(tmp_path / "e.onnx", "Reshape", ["s"], inits=[("s", np.array([1, 2, 2], np.int64))]),
         r"a Reshape of \(4,\) to \[1, 2, 2\]; only flattening"),
        (_one_node(tmp_path / "f.onnx", "Relu", [], in_shape=("batch", "n")), r"input 'x' has shape \[None, None\]"),
        (_one_node(tmp_path / "g.onnx", "MatMul", ["w"], inits=[("w", np.ones((3, 2), np.float32))]),
         r"a weight of shape \(2, 3\) does not fit inputs of size 4"),
        (_one_node(tmp_path / "h.onnx", "Div", ["z"], inits=[("z", np.zeros(4, np.float32))]), r"divides by zero"),
    ]  # fmt: skip
    for path, message in cases:
        with pytest.raises(OnnxError, match=message):
            load_onnx(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01not a protobuf" * 10)
    with pytest.raises(OnnxError, match=r"junk.onnx is not an ONNX model"):
        load_onnx(tmp_path / "junk.onnx")
    with pytest.raises(OnnxError, match=r"no ONNX file at"):
        load_onnx(tmp_path / "nowhere.onnx")


def test_gzipped_files_are_read(tmp_path):
    import gzip

    reference = _vnncomp_style(tmp_path / "acas.onnx")
    (tmp_path / "acas.onnx.gz").write_bytes(gzip.compress((tmp_path / "acas.onnx").read_bytes()))
    net = load_onnx(tmp_path / "acas.onnx.gz")
    x = np.zeros((1, 1, 1, 5), np.float32)
    assert np.allclose(net(torch.from_numpy(x)).detach().numpy(), reference(x), atol=1e-5)


def test_export_writes_nothing_when_the_network_cannot_be_read(tmp_path):
    class Custom(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    with pytest.raises(Exception, match=r"no bound rule for layer 0 \(Custom\)"):
        export_onnx(nn.Sequential(Custom()), tmp_path / "x.onnx", (4,))
    assert not list(tmp_path.iterdir())
