"""``advex verify`` and ``advex models --export``: VNN-COMP instances (an ONNX network and a
VNNLIB property) decided unsat / sat / timeout, the result file in the competition's format with a
counterexample that holds, a benchmark set from an instances CSV, and the ONNX path giving the
answers the PyTorch path gives on the zoo's networks."""

import re

import pytest
import torch
from helpers import needs_data
from test_bab import hard_problem, random_net
from torch import nn

from advex.certify import certify
from advex.certify.bab import FALSIFIED, TIMEOUT, VERIFIED, Settings
from advex.certify.export import export_onnx
from advex.certify.verify import SAT, UNSAT, verify
from advex.certify.vnnlib import read_vnnlib, robustness_vnnlib
from advex.cli import main
from advex.models.onnx import load_onnx

pytest.importorskip("onnx")
pytest.importorskip("scipy")


def box_vnnlib(lo, hi, unsafe: str, outputs: int) -> str:
    n = len(lo)
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n))
    text += "".join(f"(declare-const Y_{j} Real)\n" for j in range(outputs))
    text += "".join(f"(assert (>= X_{i} {a!r}))\n(assert (<= X_{i} {b!r}))\n" for i, (a, b) in enumerate(zip(lo, hi)))
    return text + f"(assert {unsafe})\n"


def read_assignment(text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """X and Y of a VNN-COMP 'sat' result file."""
    pairs = re.findall(r"\((X|Y)_(\d+) ([-+0-9.eE]+|nan|inf)\)", text)
    xs = {int(i): float(v) for k, i, v in pairs if k == "X"}
    ys = {int(i): float(v) for k, i, v in pairs if k == "Y"}
    return torch.tensor([xs[i] for i in range(len(xs))]), torch.tensor([ys[i] for i in range(len(ys))])


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def test_sat_writes_a_counterexample_in_the_competition_format_that_holds(tmp_path):
    net = random_net(1, 3)
    export_onnx(net, tmp_path / "net.onnx", (3,))
    lo, hi = [-2.0] * 3, [2.0] * 3
    # unsafe: output k is the largest, for the k that wins on the fewest of many points in the box
    with torch.no_grad():
        wins = net(torch.rand(4000, 3) * 4 - 2).argmax(1).bincount(minlength=3).float()
    k = int(torch.where(wins > 0, wins, float("inf")).argmin())
    others = [j for j in range(3) if j != k]
    unsafe = f"(and (>= Y_{k} Y_{others[0]}) (>= Y_{k} Y_{others[1]}))"
    (tmp_path / "p.vnnlib").write_text(box_vnnlib(lo, hi, unsafe, 3))
    rc = main(["verify", "--onnx", str(tmp_path / "net.onnx"), "--vnnlib", str(tmp_path / "p.vnnlib"),
               "--timeout", "30", "--out", str(tmp_path / "result.txt")])  # fmt: skip
    assert rc == 0
    text = (tmp_path / "result.txt").read_text()
    assert text.splitlines()[0] == "sat"
    x, y = read_assignment(text)
    assert x.shape == (3,) and y.shape == (3,)
    assert (x >= -2).all() and (x <= 2).all()
    with torch.no_grad():
        z = net(x[None])[0]
    assert torch.allclose(z, y, atol=1e-6)  # the Y written are the network's outputs at X
    assert (z[k] >= z[others]).all()  # and they are in the unsafe region


def test_unsat_and_timeout(tmp_path, capsys):
    net, x0, C, _, worst, critical = hard_problem(0)
    export_onnx(net, tmp_path / "net.onnx", (x0.shape[1],))
    y = int(net(x0).argmax())
    others = " ".join(f"(and (>= Y_{j} Y_{y}))" for j in range(3) if j != y)
    for name, eps in (("inside", 0.5 * critical), ("near", 0.97 * critical)):
        lo, hi = (x0[0] - eps).tolist(), (x0[0] + eps).tolist()  # the ball, not clipped to [0, 1]
        (tmp_path / f"{name}.vnnlib").write_text(box_vnnlib(lo, hi, f"(or {others})", 3))
    rc = main(["verify", "--onnx", str(tmp_path / "net.onnx"), "--vnnlib", str(tmp_path / "inside.vnnlib"),
               "--out", str(tmp_path / "r.txt")])  # fmt: skip
    assert rc == 0 and (tmp_path / "r.txt").read_text() == "unsat\n"
    # near the critical radius the root's bound does not settle it; a tiny budget runs out
    prop = read_vnnlib(tmp_path / "near.vnnlib", inputs=x0.shape[1], outputs=3)
    v = verify(load_onnx(tmp_path / "net.onnx"), prop, timeout=1e-3)
    assert v.result == "timeout" and v.vnncomp() == "timeout\n"
    v = verify(load_onnx(tmp_path / "net.onnx"), prop, timeout=120, bab=Settings(split="relu"))
    assert worst(0.97 * critical) > 0 and v.result == UNSAT and v.domains > 1  # the MILP agrees; it took a search


def test_an_instances_csv_runs_a_benchmark_set_with_a_summary(tmp_path, capsys):
    net = small_net()
    export_onnx(net, tmp_path / "net.onnx", (3,))
    x = torch.tensor([0.5, 0.5, 0.5])
    y = int(net(x[None]).argmax())
    (tmp_path / "robust.vnnlib").write_text(robustness_vnnlib(x, y, 1e-3, 3))
    (tmp_path / "wrong.vnnlib").write_text(robustness_vnnlib(x, (y + 1) % 3, 1e-3, 3))  # a wrong label: sat
    (tmp_path / "set.csv").write_text("net.onnx,robust.vnnlib,30\nnet.onnx,wrong.vnnlib,30\n\n")
    rc = main(["verify", "--instances", str(tmp_path / "set.csv"), "--out", str(tmp_path / "res")])
    assert rc == 0
    out = capsys.readouterr().out
    assert re.search(r"unsat\s+1\s+50.0%", out) and re.search(r"sat\s+1\s+50.0%", out)
    rows = (tmp_path / "res" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("onnx,vnnlib,timeout_s,result")
    assert [r.split(",")[3] for r in rows[1:]] == ["unsat", "sat"]
    files = sorted((tmp_path / "res").glob("*.txt"))
    assert [f.read_text().splitlines()[0] for f in files] == ["unsat", "sat"]


def test_an_unsupported_network_stops_a_set_or_is_skipped(tmp_path, capsys):
    """ERAN's VNN-COMP set mixes ReLU and sigmoid networks: by default the run stops on the one
    advex cannot read, naming the operator, before any search; --skip-unsupported answers
    'unknown' for its instances and decides the rest."""
    import onnx
    from onnx import TensorProto, helper

    net = small_net()
    export_onnx(net, tmp_path / "net.onnx", (3,))
    g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"], name="squash")], "sig",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])  # fmt: skip
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "sig.onnx"))
    x = torch.tensor([0.5, 0.5, 0.5])
    y = int(net(x[None]).argmax())
    (tmp_path / "p.vnnlib").write_text(robustness_vnnlib(x, y, 1e-3, 3))
    (tmp_path / "set.csv").write_text("sig.onnx,p.vnnlib,30\nnet.onnx,p.vnnlib,30\n")
    rc = main(["verify", "--instances", str(tmp_path / "set.csv"), "--out", str(tmp_path / "a")])
    assert rc == 2 and "operator Sigmoid is not supported" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # nothing written: it stopped before any search
    rc = main(["verify", "--instances", str(tmp_path / "set.csv"), "--out", str(tmp_path / "b"), "--skip-unsupported"])
    out = capsys.readouterr().out
    assert rc == 0 and "sig.onnx p.vnnlib: unsupported (" in out and re.search(r"unsupported\s+1\s+50.0%", out)
    rows = (tmp_path / "b" / "results.csv").read_text().splitlines()
    assert [r.split(",")[3] for r in rows[1:]] == ["unsupported", "unsat"]
    files = sorted((tmp_path / "b").glob("*.txt"))
    assert [f.read_text() for f in files] == ["unknown\n", "unsat\n"]


@needs_data
def test_the_onnx_path_answers_as_the_pytorch_path_on_the_zoo(tmp_path):
    """mnist-small at eps 0.02: `advex models --export` + a VNNLIB robustness property per image,
    decided by `verify`, against certify(method="bab") on the module itself."""
    from advex.data import load_dataset
    from advex.models import load

    model = load("mnist-small").eval()
    assert main(["models", "--export", "mnist-small", str(tmp_path / "m.onnx")]) == 0
    net = load_onnx(tmp_path / "m.onnx")
    x, y = load_dataset("mnist", "test").subset(10).floats()
    eps = 0.02
    with torch.no_grad():
        assert torch.allclose(net(x), model(x), atol=1e-5)
    settings = Settings(timeout=120, max_domains=400)
    r = certify(model, x, y, eps=eps, method="bab", bab=settings)
    expect = {VERIFIED: UNSAT, FALSIFIED: SAT, TIMEOUT: "timeout"}
    searched = 0
    for i in range(10):
        prop = read_vnnlib(robustness_vnnlib(x[i], int(y[i]), eps, 10), inputs=784, outputs=10)
        assert torch.equal(prop.lower.float().view_as(x[i]), (x[i] - eps).clamp(0, 1))  # the same box, to the bit
        v = verify(net, prop, timeout=120, bab=settings)
        assert v.result == expect[r.status[i]], i
        searched += v.domains > 1
    assert searched >= 1  # image 8 needs the search on both paths


def test_export_of_every_zoo_architecture_reads_back(tmp_path):
    from advex.models import describe

    names = [n for n in describe() if n.startswith(("mnist-small", "cifar10-small"))][:3]
    for name in names:
        out = tmp_path / f"{name}.onnx"
        assert main(["models", "--export", name, str(out)]) == 0
        assert load_onnx(out).in_shape in ((1, 28, 28), (3, 32, 32))


@needs_data
def test_an_onnx_file_is_a_model_for_every_command(tmp_path):
    from advex.data import load_dataset
    from advex.models import load

    assert main(["models", "--export", "mnist-small-ibp-0.1", str(tmp_path / "m.onnx")]) == 0
    x, y = load_dataset("mnist", "test").subset(20).floats()
    zoo, onnx_model = load("mnist-small-ibp-0.1"), load(str(tmp_path / "m.onnx"))
    assert onnx_model.channels == 1 and onnx_model.input_size == (28, 28)
    a = certify(zoo, x, y, eps=0.1, method="crown")
    b = certify(onnx_model, x, y, eps=0.1, method="crown")
    assert torch.equal(a.certified, b.certified) and torch.allclose(a.lower, b.lower, atol=1e-4)
    out = tmp_path / "run"
    rc = main(["certify", "--model", str(tmp_path / "m.onnx"), "--dataset", "mnist", "--n", "5", "--eps", "0.1",
               "--quiet", "--out", str(out)])  # fmt: skip
    assert rc == 0 and (out / "certify.json").is_file()
