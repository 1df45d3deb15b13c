"""VNNLIB properties: the box, the unsafe region in disjunctive normal form, and errors that
name the line."""

import pytest
import torch

from advex.certify.vnnlib import VnnlibError, read_vnnlib

ROBUST = """; a robustness property, as VNN-COMP writes them
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (<= X_0 0.6))
(assert (>= X_0 0.4))
(assert (<= X_1 1.0))
(assert (>= X_1 -1e-1))
(assert (or
    (and (>= Y_1 Y_0))
    (and (>= Y_2 Y_0))
))
"""


def test_a_robustness_property():
    p = read_vnnlib(ROBUST, inputs=2, outputs=3)
    assert p.lower.tolist() == [0.4, -0.1] and p.upper.tolist() == [0.6, 1.0]
    assert len(p.unsafe) == 2 and all(len(c) == 1 for c in p.unsafe)
    (c1, k1), (c2, k2) = p.unsafe[0][0], p.unsafe[1][0]
    assert c1.tolist() == [1.0, -1.0, 0.0] and k1 == 0  # Y_0 - Y_1 <= 0: class 1 at least class 0
    assert c2.tolist() == [1.0, 0.0, -1.0] and k2 == 0


def test_conjunctions_linear_terms_and_their_meaning():
    text = """(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)
    (assert (<= X_0 1)) (assert (>= X_0 0))
    (assert (<= (+ Y_0 (* 2 Y_1)) 3))
    (assert (or (<= Y_0 -1) (and (>= (- Y_1 Y_0) 0.5) (<= Y_1 4))))"""
    p = read_vnnlib(text)
    assert len(p.unsafe) == 2 and [len(c) for c in p.unsafe] == [2, 3]
    g = torch.Generator().manual_seed(0)
    for _ in range(200):  # the DNF agrees with the constraints read directly
        y0, y1 = (torch.rand(2, generator=g, dtype=torch.float64) * 12 - 6).tolist()
        direct = (y0 + 2 * y1 <= 3) and ((y0 <= -1) or (y1 - y0 >= 0.5 and y1 <= 4))
        y = torch.tensor([y0, y1], dtype=torch.float64)
        dnf = any(all(float(c @ y) + k <= 0 for c, k in conj) for conj in p.unsafe)
        assert dnf == direct


def test_several_input_boxes_each_with_its_own_outputs():
    """(or (and <box> <outputs>) ...), as some VNN-COMP sets write a property over several boxes;
    a box of the file applies to all, an empty box never applies."""
    text = """(declare-const X_0 Real)(declare-const X_1 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)
    (assert (>= X_1 0)) (assert (<= X_1 1))
    (assert (or
        (and (>= X_0 -1) (<= X_0 0) (>= Y_0 Y_1))
        (and (>= X_0 0) (<= X_0 2) (<= Y_0 -3))
        (and (>= X_0 0) (<= X_0 2) (>= Y_1 5))
        (and (>= X_0 3) (<= X_0 2) (>= Y_1 5))
    ))"""
    p = read_vnnlib(text, inputs=2, outputs=2)
    assert len(p.regions) == 2  # the two boxes; the empty third one dropped
    a, b = p.regions
    assert a.lower.tolist() == [-1, 0] and a.upper.tolist() == [0, 1] and len(a.unsafe) == 1
    assert b.lower.tolist() == [0, 0] and b.upper.tolist() == [2, 1] and len(b.unsafe) == 2
    ((c, k),) = a.unsafe[0]
    assert c.tolist() == [-1.0, 1.0] and k == 0  # Y_1 - Y_0 <= 0
    with pytest.raises(Exception, match="2 input boxes"):
        _ = p.lower
    with pytest.raises(VnnlibError, match=r"line 1: a constraint mixing inputs and outputs"):
        read_vnnlib("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 Y_0))")
    with pytest.raises(VnnlibError, match=r"line 1: an input constraint must bound one X_i by a number"):
        read_vnnlib("(declare-const X_0 Real)(declare-const X_1 Real)(declare-const Y_0 Real)"
                    "(assert (or (and (<= (+ X_0 X_1) 1) (<= Y_0 0))))")  # fmt: skip


def test_several_boxes_decided_box_by_box():
    """A network and a two-box property: safe in one box, not in the other; then safe in both."""
    from torch import nn

    from advex.certify.verify import SAT, UNSAT, verify

    net = nn.Sequential(nn.Linear(1, 1)).eval()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(0.0)  # y = x
    head = "(declare-const X_0 Real)(declare-const Y_0 Real)"
    both = head + "(assert (or (and (>= X_0 0) (<= X_0 1) (<= Y_0 -0.5)) (and (>= X_0 2) (<= X_0 3) (>= Y_0 2.5))))"
    v = verify(net, read_vnnlib(both), in_shape=(1,), timeout=10)
    assert v.result == SAT and 2.5 <= float(v.x[0]) <= 3 and float(v.y[0]) >= 2.5
    safe = head + "(assert (or (and (>= X_0 0) (<= X_0 1) (<= Y_0 -0.5)) (and (>= X_0 2) (<= X_0 3) (>= Y_0 3.5))))"
    assert verify(net, read_vnnlib(safe), in_shape=(1,), timeout=10).result == UNSAT


@pytest.mark.parametrize(
    "text, message",
    [
        ("(declare-const X_0 Real)\n(assert (<= X_0 1)", r"line 2: a '\(' is never closed"),
        ("(declare-const X_0 Real))", r"line 1: a '\)' closes nothing"),
        ("(declare-const X_0 Int)", r"line 1: expected \(declare-const X_i Real\)"),
        ("(declare-const X_0 Real)\n(check-sat)", r"line 2: unknown command 'check-sat'"),
        (
            "(declare-const X_0 Real)(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (<= Y_0 1))",
            r"input X_0 needs a lower and an upper bound",
        ),
        (
            "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 2))(assert (<= Y_0 0))",
            r"X_0 has lower bound 2 above its upper bound 1",
        ),
        (
            "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))\n"
            "(assert (<= (* Y_0 Y_0) 1))",
            r"line 2: a product of two variables is not linear",
        ),
        (
            "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))\n"
            "(assert (<= Y_0 X_0))",
            r"line 2: a constraint mixing inputs and outputs",
        ),
        (
            "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))\n"
            "(assert (< Y_0 1))",
            r"line 2: expected a constraint \(<= a b\)",
        ),
        ("(declare-const X_1 Real)(declare-const Y_0 Real)", r"declares X_0 but not|declares X_1 but not X_0"),
        (
            "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))",
            r"no constraint on the outputs",
        ),
    ],
)
def test_errors_name_the_line_and_the_reason(text, message):
    with pytest.raises(VnnlibError, match=message):
        read_vnnlib(text)


def test_sizes_are_checked_against_the_network(tmp_path):
    f = tmp_path / "p.vnnlib"
    f.write_text(ROBUST)
    assert read_vnnlib(f).outputs == 3
    with pytest.raises(VnnlibError, match="declares 2 inputs, the network takes 784"):
        read_vnnlib(f, inputs=784)
    with pytest.raises(VnnlibError, match="declares 3 outputs, the network gives 10"):
        read_vnnlib(f, outputs=10)
    with pytest.raises(VnnlibError, match="does not exist"):
        read_vnnlib(tmp_path / "missing.vnnlib")
