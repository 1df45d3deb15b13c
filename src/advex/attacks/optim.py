"""Batched box-constrained minimisers: every image is its own problem.

Both solvers minimise ``f_i(r_i)`` for all images i of a batch at once, subject to
``lower_i <= r_i <= upper_i`` elementwise. ``objective(r, idx)`` returns the (len(idx),)
values and their gradients for the images ``idx`` only, so images that have converged
leave the batch and stop costing forward/backward passes. Each image keeps its own
step size, curvature history and stopping state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class SolveStats:
    iterations: torch.Tensor  # (N,) accepted steps per image
    evals: torch.Tensor  # (N,) objective+gradient evaluations per image
    f: torch.Tensor  # (N,) final objective


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image inner product of two (N, ...) tensors, without a temporary."""
    n = a.shape[0]
    return torch.linalg.vecdot(a.reshape(n, -1), b.reshape(n, -1))


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def _free(r, g, lower, upper):
    """Variables not pinned at a bound by a gradient pointing outward (L-BFGS-B's active set)."""
    at_lo = (r <= lower) & (g > 0)
    at_hi = (r >= upper) & (g < 0)
    return ~(at_lo | at_hi) & (upper > lower)


def lbfgs_box(
    objective: Objective,
    r0: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    max_iter: int = 30,
    history: int = 8,
    init_step: float = 1.0 / 255,
    rtol: float = 1e-4,
    max_backtracks: int = 12,
) -> tuple[torch.Tensor, SolveStats]:
    """Projected L-BFGS (L-BFGS-B style active set + projected backtracking line search).

    The direction is the two-loop L-BFGS recursion on the free variables (those not held
    at a bound by their gradient); the step is an Armijo backtracking search along the
    projected path ``clip(r + t d)``. An image stops when its relative decrease over an
    iteration falls below ``rtol`` or its projected gradient vanishes.
    """
    n = r0.shape[0]
    dev = r0.device
    all_idx = torch.arange(n, device=dev)
    r = r0.clamp(lower, upper).clone()
    f, g = objective(r, all_idx)
    evals = torch.ones(n, dtype=torch.long, device=dev)
    iters = torch.zeros(n, dtype=torch.long, device=dev)
    S = torch.zeros((history, *r.shape), dtype=r.dtype, device=dev)
    Y = torch.zeros_like(S)
    rho = torch.zeros(history, n, dtype=r.dtype, device=dev)
    gamma = torch.zeros(n, dtype=r.dtype, device=dev)  # 0: no curvature pair yet
    slot = 0
    active = torch.ones(n, dtype=torch.bool, device=dev)

    for _ in range(max_iter):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        free = _free(r[idx], g[idx], lower[idx], upper[idx])
        pg = g[idx] * free
        pg_max = pg.flatten(1).abs().amax(1)
        still = pg_max > 0  # a zero projected gradient is a stationary point: done
        if not still.all():
            active[idx[~still]] = False
            idx, free, pg, pg_max = idx[still], free[still], pg[still], pg_max[still]
            if idx.numel() == 0:
                break
        # two-loop recursion (zero history slots have rho = 0 and act as no-ops); the
        # history of the active images is gathered once (a view when all are active)
        whole = idx.numel() == n
        S_a, Y_a, rho_a = (S, Y, rho) if whole else (S[:, idx], Y[:, idx], rho[:, idx])
        q = pg.clone()
        alphas = []
        order = [(slot - 1 - j) % history for j in range(history)]
        for j in order:
            a = rho_a[j] * _dot(S_a[j], q)
            alphas.append(a)
            q.addcmul_(Y_a[j], _bcast(-a, q))
        gam = gamma[idx]
        has_h = gam > 0
        scale = torch.where(has_h, gam, init_step / pg_max.clamp_min(1e-30))
        z = _bcast(scale, q) * q
        for j, a in zip(reversed(order), reversed(alphas)):
            b = rho_a[j] * _dot(Y_a[j], z)
            z.addcmul_(S_a[j], _bcast(a - b, z))
        del S_a, Y_a
        d = -z * free
        slope = _dot(d, pg)
        bad = slope >= 0  # not a descent direction: restart from steepest descent
        if bad.any():
            d[bad] = -pg[bad] * _bcast(init_step / pg_max[bad].clamp_min(1e-30), pg[bad])
            rho[:, idx[bad]] = 0
            gamma[idx[bad]] = 0
        # projected backtracking line search, per image
        t = torch.ones(idx.numel(), dtype=r.dtype, device=dev)
        pending = torch.ones(idx.numel(), dtype=torch.bool, device=dev)
        r_old, f_old, g_old = r[idx], f[idx], g[idx]
        r_new, f_new, g_new = r_old.clone(), f_old.clone(), g_old.clone()
        for _ in range(max_backtracks):
            p = pending.nonzero().flatten()
            if p.numel() == 0:
                break
            cand = (r_old[p] + _bcast(t[p], d[p]) * d[p]).clamp(lower[idx[p]], upper[idx[p]])
            fc, gc = objective(cand, idx[p])
            evals[idx[p]] += 1
            ok = fc <= f_old[p] + 1e-4 * _dot(g_old[p], cand - r_old[p])
            okp = p[ok]
            r_new[okp], f_new[okp], g_new[okp] = cand[ok], fc[ok], gc[ok]
            pending[okp] = False
            t[p[~ok]] *= 0.5
        failed = pending  # no acceptable step: this image has converged as far as it can
        accepted = ~failed
        r[idx], f[idx], g[idx] = r_new, f_new, g_new
        iters[idx[accepted]] += 1
        # curvature pair
        s = r_new - r_old
        yv = g_new - g_old
        sy = _dot(s, yv)
        yy = _dot(yv, yv)
        good = accepted & (sy > 1e-10 * yy.clamp_min(1e-30)) & (yy > 0)
        S[slot, idx] = s * _bcast(good.to(s.dtype), s)
        Y[slot, idx] = yv * _bcast(good.to(s.dtype), s)
        rho[slot, idx] = torch.where(good, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        gamma[idx] = torch.where(good, sy / yy.clamp_min(1e-30), gamma[idx])
        slot = (slot + 1) % history
        decrease = (f_old - f_new) / f_old.abs().clamp_min(1e-8)
        converged = failed | (accepted & (decrease < rtol))
        active[idx[converged]] = False
    return r, SolveStats(iters, evals, f)


def adam_box(
    objective: Objective,
    r0: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    max_iter: int = 100,
    lr: float = 1.0 / 255,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    rtol: float = 1e-4,
    patience: int = 10,
) -> tuple[torch.Tensor, SolveStats]:
    """Adam with projection onto the box after every step.

    An image stops when its best objective has not improved by a relative ``rtol`` for
    ``patience`` steps; the best point seen is returned.
    """
    n = r0.shape[0]
    dev = r0.device
    r = r0.clamp(lower, upper).clone()
    m = torch.zeros_like(r)
    v = torch.zeros_like(r)
    step = torch.zeros(n, dtype=r.dtype, device=dev)
    best_r = r.clone()
    best_f = torch.full((n,), float("inf"), dtype=r.dtype, device=dev)
    since = torch.zeros(n, dtype=torch.long, device=dev)
    evals = torch.zeros(n, dtype=torch.long, device=dev)
    iters = torch.zeros(n, dtype=torch.long, device=dev)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    b1, b2 = betas
    for _ in range(max_iter + 1):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        f, g = objective(r[idx], idx)
        evals[idx] += 1
        improved = f < best_f[idx] - rtol * best_f[idx].abs()
        best_r[idx[improved]] = r[idx[improved]]
        best_f[idx] = torch.minimum(best_f[idx], f)
        since[idx] = torch.where(improved, torch.zeros_like(since[idx]), since[idx] + 1)
        stop = (since[idx] >= patience) | (iters[idx] >= max_iter)
        active[idx[stop]] = False
        go = idx[~stop]
        if go.numel() == 0:
            continue
        gg = g[~stop]
        step[go] += 1
        m[go] = b1 * m[go] + (1 - b1) * gg
        v[go] = b2 * v[go] + (1 - b2) * gg * gg
        mhat = m[go] / _bcast(1 - b1 ** step[go], gg)
        vhat = v[go] / _bcast(1 - b2 ** step[go], gg)
        r[go] = (r[go] - lr * mhat / (vhat.sqrt() + eps)).clamp(lower[go], upper[go])
        iters[go] += 1
    return best_r, SolveStats(iters, evals, best_f)
