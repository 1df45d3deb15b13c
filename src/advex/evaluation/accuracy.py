"""Quick accuracies of a model on a dataset held on the device: clean, under L-inf PGD, under
Gaussian noise, and certified. These are the numbers training records every epoch (``advex train``) and the zoo
cards state; the full evaluation (attack ensembles, sanity checks) is ``evaluate``.

A run split across processes takes the batches round-robin: process ``rank`` of ``world``
evaluates batches ``rank``, ``rank + world``, ... (``batch_starts``). The ``count_*``
functions return this process's count of correct images; summing the counts over the
processes (the caller's all-reduce) and dividing by ``len(data)`` gives the accuracy. No
process group is needed here: with ``world=1`` (the default) a count covers all of ``data``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advex.attacks import pgd_loop
from advex.data import ArrayDataset


def batch_starts(n: int, batch_size: int, rank: int = 0, world: int = 1) -> range:
    """First index of each batch of ``batch_size`` (out of ``n`` images) that process ``rank`` of ``world`` takes."""
    return range(rank * batch_size, n, batch_size * world)


@torch.no_grad()
def count_correct(model: nn.Module, data: ArrayDataset, batch_size: int = 1000, rank: int = 0, world: int = 1) -> int:
    """How many of this process's share of ``data`` ``model`` classifies correctly."""
    correct = torch.zeros((), device=data.images.device)
    for i in batch_starts(len(data), batch_size, rank, world):
        x, y = data.floats(slice(i, i + batch_size))
        correct += (model(x).argmax(1) == y).sum()
    return int(correct)


def count_robust(
    model: nn.Module,
    data: ArrayDataset,
    eps: float,
    steps: int,
    step_size: float | None = None,
    batch_size: int = 500,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
) -> int:
    """How many of this process's share of ``data`` ``model`` still classifies correctly under
    L-inf PGD (Madry et al. 2018: a uniform random start, then ``steps`` signed-gradient steps of
    ``step_size``, default ``2.5 * eps / steps``, on the cross-entropy), drawn from a generator
    seeded with ``seed + 1``. ``eps <= 0`` counts clean accuracy."""
    if eps <= 0:
        return count_correct(model, data, rank=rank, world=world)
    step_size = step_size or 2.5 * eps / steps
    gen = torch.Generator(data.images.device).manual_seed(seed + 1)
    correct = torch.zeros((), device=data.images.device)
    for i in batch_starts(len(data), batch_size, rank, world):
        x, y = data.floats(slice(i, i + batch_size))
        ce = lambda z, rows, y=y: F.cross_entropy(z, y[rows], reduction="sum")  # noqa: E731
        xa = pgd_loop(model, x, ce, eps=eps, steps=steps, step_size=step_size, generator=gen).x_adv
        with torch.no_grad():
            correct += (model(xa).argmax(1) == y).sum()
    return int(correct)


@torch.no_grad()
def count_noisy(
    model: nn.Module,
    data: ArrayDataset,
    sigma: float,
    batch_size: int = 1000,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
) -> int:
    """How many of this process's share of ``data`` ``model`` classifies correctly under one
    draw of Gaussian noise of standard deviation ``sigma`` (pixels in [0, 1], not clipped): the
    base classifier's accuracy that randomized smoothing starts from. The noise of each batch
    is seeded by ``seed`` and the batch's first index, so the count does not depend on ``world``."""
    correct = torch.zeros((), device=data.images.device)
    for i in batch_starts(len(data), batch_size, rank, world):
        x, y = data.floats(slice(i, i + batch_size))
        gen = torch.Generator(x.device).manual_seed(seed * 1_000_003 + i)
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        correct += (model(x + sigma * noise).argmax(1) == y).sum()
    return int(correct)


def clean_accuracy(model: nn.Module, data: ArrayDataset, batch_size: int = 1000) -> float:
    """Fraction of ``data`` that ``model`` classifies correctly."""
    return count_correct(model, data, batch_size) / len(data)


def robust_accuracy(
    model: nn.Module,
    data: ArrayDataset,
    eps: float,
    steps: int,
    step_size: float | None = None,
    batch_size: int = 500,
    seed: int = 0,
) -> float:
    """Accuracy under L-inf PGD (random start, ``steps`` steps of ``step_size``); see ``count_robust``."""
    return count_robust(model, data, eps, steps, step_size, batch_size, seed) / len(data)


def certified_accuracy(model: nn.Module, data: ArrayDataset, eps: float, method: str = "ibp") -> float:
    """Fraction of ``data`` certified at L-inf ``eps`` by ``method`` (no attack: a quick number)."""
    from advex.certify import certify

    x, y = data.floats()
    return certify(model, x, y, eps=eps, method=method, attack=False, batch_size=500).certified_accuracy
