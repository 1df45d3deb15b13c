"""Exact answers for small ReLU networks (tests only): the minimum of a linear function of the
outputs over an input box by a mixed-integer program (scipy's HiGHS), the ReLU z -> h encoded
with a binary a per unstable neuron (h >= z, h >= 0, h <= z - l (1 - a), h <= u a) and its
interval bounds [l, u] as the big-M constants."""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn


def layers_of(net: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) of each Linear of a Linear/ReLU/Linear... network, in float64."""
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in net if
            isinstance(m, nn.Linear)]  # fmt: skip


def exact_min(layers, lo, hi, c, d=0.0, fixed: dict | None = None) -> float | None:
    """min over x in [lo, hi] of c . f(x) + d, f the network of ``layers`` (a ReLU after every
    layer but the last); for c of shape (K, out) and d (K,), of the largest of the K values (a
    VNNLIB conjunction). ``fixed`` maps (hidden layer, neuron) to +1 (pre-activation >= 0) or -1
    (<= 0): the minimum over the box's points with those activations; None if there are none."""
    fixed = fixed or {}
    names_lo, names_hi, integer = [], [], []

    def add(n, lower, upper, binary=False):
        start = len(names_lo)
        names_lo.extend(lower)
        names_hi.extend(upper)
        integer.extend([int(binary)] * n)
        return np.arange(start, start + n)

    rows, row_lo, row_hi = [], [], []

    def constrain(coef: dict, lower, upper):
        rows.append(coef)
        row_lo.append(lower)
        row_hi.append(upper)

    prev = add(len(lo), lo, hi)
    box_lo, box_hi = np.asarray(lo, float), np.asarray(hi, float)
    for layer, (W, b) in enumerate(layers[:-1]):
        centre, radius = (box_lo + box_hi) / 2, (box_hi - box_lo) / 2
        zl = W @ centre + b - np.abs(W) @ radius - 1e-7
        zu = W @ centre + b + np.abs(W) @ radius + 1e-7
        n = len(b)
        z, h = add(n, zl, zu), add(n, np.zeros(n), np.maximum(zu, 0))
        a = add(n, np.zeros(n), np.ones(n), binary=True)
        for i in range(n):
            coef = {z[i]: 1.0}
            for k, w in zip(prev, W[i]):
                coef[k] = coef.get(k, 0.0) - w
            constrain(coef, b[i], b[i])  # z = W prev + b
            sign = fixed.get((layer, i), 0)
            if sign > 0:
                constrain({z[i]: 1.0}, 0.0, np.inf)
            elif sign < 0:
                constrain({z[i]: 1.0}, -np.inf, 0.0)
            if zl[i] >= 0:  # stable active: h = z
                constrain({h[i]: 1.0, z[i]: -1.0}, 0.0, 0.0)
                constrain({a[i]: 1.0}, 1.0, 1.0)
            elif zu[i] <= 0:  # stable inactive: h = 0
                constrain({h[i]: 1.0}, 0.0, 0.0)
                constrain({a[i]: 1.0}, 0.0, 0.0)
            else:
                constrain({h[i]: 1.0, z[i]: -1.0}, 0.0, np.inf)
                constrain({h[i]: 1.0, z[i]: -1.0, a[i]: -zl[i]}, -np.inf, -zl[i])
                constrain({h[i]: 1.0, a[i]: -zu[i]}, -np.inf, 0.0)
        box_lo, box_hi = np.maximum(zl, 0), np.maximum(zu, 0)
        prev = h
    W, b = layers[-1]
    c = np.asarray(c, float)
    objective = np.zeros(len(names_lo) + (c.ndim == 2))
    if c.ndim == 2:  # min t with t >= c_k . f(x) + d_k for every k
        (t,) = add(1, [-np.inf], [np.inf])
        objective[t] = 1.0
        for ck, dk in zip(c, np.broadcast_to(np.asarray(d, float), len(c))):
            coef = {t: 1.0}
            for k, w in zip(prev, ck @ W):
                coef[k] = -w
            constrain(coef, ck @ b + dk, np.inf)
        c, d, b = np.zeros(W.shape[0]), 0.0, np.zeros_like(b)
    else:
        objective[prev] += c @ W
    A = np.zeros((len(rows), len(names_lo)))
    for r, coef in enumerate(rows):
        for k, v in coef.items():
            A[r, k] = v
    res = None
    for presolve in (True, False):  # HiGHS's presolve occasionally fails where the plain solve does not
        res = milp(objective, constraints=LinearConstraint(A, row_lo, row_hi), integrality=np.array(integer),
                   bounds=Bounds(names_lo, names_hi), options={"mip_rel_gap": 1e-9, "presolve": presolve})  # fmt: skip
        if res.success or res.status == 2:
            break
    if res.status == 2:  # infeasible
        return None
    assert res.success, res.message
    return float(res.fun + np.asarray(c, float) @ b + d)
