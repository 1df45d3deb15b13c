"""`advex train`: standard, adversarial and certified training on MNIST / CIFAR-10, on one
process or many.

Data lives on the device as uint8 for the whole run; batches are index gathers, CIFAR
augmentation (``advex.data.augment_crop_flip``) is vectorised on the device, so there is no
per-sample Python in the hot loop. Under ``torchrun`` the same call trains data-parallel
(``defences.distributed``): every rank draws the same permutation, takes its share, and
gradients are averaged.

Every epoch: train (``_train_epoch``), measure clean, PGD and certified accuracy on the test
set (``advex.evaluation``), checkpoint (``defences.checkpoint``) and redraw the curves
(``advex.report.training_curves``). Outputs in ``out``: ``model.safetensors``,
``config.json``, ``metrics.json`` (one record per epoch), ``curves.png``,
``state.safetensors`` + ``state.json`` (for ``resume``) and, at the end, ``card.json``.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from advex.data import ArrayDataset, augment_crop_flip, check_writable, load_dataset
from advex.defences import checkpoint, distributed
from advex.defences.checkpoint import Progress
from advex.defences.config import TrainConfig
from advex.defences.distributed import Processes
from advex.defences.losses import CERTIFIED, LOSSES, SMOOTHING
from advex.errors import AdvexError
from advex.evaluation import certified_accuracy, count_correct, count_noisy, count_robust
from advex.models import Classifier, ibp_init, make_classifier, resolve_device
from advex.report import training_curves


@dataclass
class TrainRun:
    """What ``train`` returns: the trained model, its card, the per-epoch records, and this
    process's rank among ``world`` (under torchrun every process returns one)."""

    model: Classifier
    card: dict[str, Any]
    history: list[dict]
    rank: int = 0
    world: int = 1


def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    verbose: bool = True,
    command: str | None = None,
    download: bool = False,
) -> TrainRun:
    """Train, evaluate every epoch, checkpoint every epoch; return the model and its card.

    ``resume`` continues the run in ``out`` (its saved configuration; ``cfg.epochs``, if set,
    extends it); without it, a folder that already holds a run is refused. ``progress`` shows
    a bar per epoch; ``verbose`` prints one line per epoch; ``command`` is recorded in
    config.json and card.json; ``download`` fetches the dataset if it is not found.
    """
    out = Path(out)
    cfg = _configure(cfg, out, resume)
    procs, dev = distributed.setup(resolve_device(device))
    _check_output(cfg, out, procs, resume)
    _fetch_data(cfg, procs, download)
    run = _start(cfg, out, procs, dev, resume)
    if procs.main and not resume:
        checkpoint.write_config(out, asdict(cfg) | {"command": command})
    start_epoch, t_start = run.progress.epoch, time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        stats, seconds = _train_epoch(run, epoch, show=progress and procs.main)
        record = _record(run, epoch, stats, seconds, _evaluate(run))
        run.progress.history.append(record)
        run.progress.epoch = epoch + 1
        if procs.main:
            _save_epoch(run)
            if verbose:
                _print_epoch(cfg, record, seconds)
        if _out_of_steps(cfg, run.progress.step):
            break
    card = _card(run, start_epoch, time.perf_counter() - t_start, command) if run.progress.history else {}
    if card and procs.main:
        checkpoint.write_card(out, card)
    return TrainRun(run.clf, card, run.progress.history, procs.rank, procs.world)


@dataclass
class _Run:
    """What one training run works with, set up once by ``_start``."""

    cfg: TrainConfig
    out: Path
    procs: Processes
    device: torch.device
    train_set: ArrayDataset
    test_set: ArrayDataset
    clf: Classifier
    model: nn.Module  # what gradients flow through: ``clf``, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    loss_fn: Callable
    progress: Progress
    local_bs: int  # this process's share of a batch
    steps_per_epoch: int

    @property
    def total(self) -> int:
        """Optimiser steps in the whole run (the length of the lr and eps schedules)."""
        return self.steps_per_epoch * self.cfg.epochs


class _Scores(NamedTuple):
    test_acc: float
    robust_acc: float | None
    certified_acc: float | None
    noise_acc: float | None = None


# ------------------------------------------------------------------ set-up
def _configure(cfg: TrainConfig, out: Path, resume: bool) -> TrainConfig:
    """The resolved configuration: ``cfg``'s, or on ``resume`` the saved run's."""
    if resume:
        checkpoint.check_resumable(out)
        cfg = cfg.resumed(checkpoint.read_config(out), f"the run in {out}")
    return cfg.resolved()


def _check_output(cfg: TrainConfig, out: Path, procs: Processes, resume: bool) -> None:
    """Refuse before any work: a batch that does not split over the processes, a folder that
    holds another run (unless resuming it), a folder that cannot be written."""
    if cfg.batch_size % procs.world:
        raise AdvexError(f"batch size {cfg.batch_size} is not divisible by the {procs.world} processes")
    if not resume:
        checkpoint.check_fresh(out)
    if procs.main:
        check_writable(out)


def _fetch_data(cfg: TrainConfig, procs: Processes, download: bool) -> None:
    """With ``download``, one process fetches the dataset; the others wait for it."""
    if download and procs.main:
        for split in ("train", "test"):
            load_dataset(cfg.dataset, split, cfg.data_dir, download=True)
    procs.barrier()


def _start(cfg: TrainConfig, out: Path, procs: Processes, dev: torch.device, resume: bool) -> _Run:
    """Data on the device, the network (seeded), its optimiser, and the checkpoint to resume."""
    torch.manual_seed(cfg.seed)
    train_set = load_dataset(cfg.dataset, "train", cfg.data_dir).subset(cfg.train_n).to(dev)
    test_set = load_dataset(cfg.dataset, "test", cfg.data_dir).to(dev)
    clf = make_classifier(cfg.dataset, cfg.arch).to(dev)
    if cfg.init == "ibp":
        ibp_init(clf.net)
    opt = _optimizer(cfg, clf.parameters())
    progress = checkpoint.restore(out, clf.net, opt, cfg.arch) if resume else Progress()
    model = distributed.data_parallel(clf, dev, procs)
    local_bs = cfg.batch_size // procs.world
    steps_per_epoch = max(1, len(train_set) // procs.world // local_bs)
    return _Run(
        cfg=cfg,
        out=out,
        procs=procs,
        device=dev,
        train_set=train_set,
        test_set=test_set,
        clf=clf,
        model=model,
        opt=opt,
        loss_fn=LOSSES[cfg.defence],
        progress=progress,
        local_bs=local_bs,
        steps_per_epoch=steps_per_epoch,
    )


def _optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)


# ------------------------------------------------------------------ schedules
def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up over the first 2% of the steps, then cosine decay to 0."""
    warm = max(1, total // 50)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _eps_at(cfg: TrainConfig, step: int, total: int) -> float:
    """eps grows linearly from 0 over the first ``eps_ramp`` of training, then stays."""
    ramp = int(cfg.eps_ramp * total)
    return cfg.eps if ramp == 0 or step >= ramp else cfg.eps * (step + 1) / ramp


def _out_of_steps(cfg: TrainConfig, step: int) -> bool:
    return cfg.max_steps is not None and step >= cfg.max_steps


# ------------------------------------------------------------------ one epoch
def _train_epoch(run: _Run, epoch: int, show: bool) -> tuple[torch.Tensor, float]:
    """One pass over this process's share of the training set; returns the (loss sum,
    correct, seen) counters summed over the processes, and this process's seconds."""
    cfg, dev = run.cfg, run.device
    run.clf.train()
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    perm = run.procs.share(torch.randperm(len(run.train_set), generator=g), run.steps_per_epoch * run.local_bs)
    perm = perm.to(dev)
    gen = torch.Generator(dev).manual_seed(cfg.seed * 7919 + epoch * 31 + run.procs.rank)
    t0 = time.perf_counter()
    tot_loss = torch.zeros((), device=dev)
    tot_correct = torch.zeros((), device=dev)
    seen = 0
    bar = _bar(run.steps_per_epoch, epoch, cfg.epochs) if show else range(run.steps_per_epoch)
    for s in bar:
        if _out_of_steps(cfg, run.progress.step):
            break
        x, y = run.train_set.floats(perm[s * run.local_bs : (s + 1) * run.local_bs])
        if cfg.augment:
            x = augment_crop_flip(x, gen)
        if cfg.defence not in CERTIFIED:  # channels-last where it pays (the bound rules keep their layout)
            x = run.clf.fast_layout(x)
        loss, z, eps = _step(run, x, y, gen)
        tot_loss += loss.detach() * len(y)
        tot_correct += (z.detach().argmax(1) == y).sum()
        seen += len(y)
        if show and s % 20 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", eps=f"{eps:.3f}")
    seconds = time.perf_counter() - t0
    return run.procs.all_sum(torch.stack([tot_loss, tot_correct, torch.tensor(float(seen), device=dev)])), seconds


def _bar(steps: int, epoch: int, epochs: int):
    from tqdm.auto import tqdm

    return tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=False)


def _step(
    run: _Run, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimiser step on the defence's loss at this step's lr and eps."""
    step = run.progress.step
    for group in run.opt.param_groups:
        group["lr"] = _lr_at(run.cfg, step, run.total)
    eps = _eps_at(run.cfg, step, run.total)
    loss, z = run.loss_fn(run.model, run.clf, x, y, eps, run.cfg, gen)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    run.progress.step += 1
    return loss, z, eps


def _certified_method(cfg: TrainConfig) -> str:
    """The bound the defence trains for, and so the one its per-epoch certified accuracy uses."""
    return "crown" if cfg.defence == "convex" else "ibp"


def _evaluate(run: _Run) -> _Scores:
    """Clean accuracy on the test set and, with eps > 0, PGD accuracy on its first ``eval_n``
    images (for the smoothing defences, the accuracy under one draw of their noise on the test
    set instead), the batches shared among the processes; certified accuracy on rank 0 only."""
    cfg, procs, test = run.cfg, run.procs, run.test_set
    run.clf.eval()
    first = test.subset(cfg.eval_n)
    shard = dict(rank=procs.rank, world=procs.world)
    counts = [count_correct(run.clf, test, **shard)]
    smoothing = cfg.defence in SMOOTHING
    if smoothing:
        counts.append(count_noisy(run.clf, test, cfg.sigma, seed=cfg.seed, **shard))
    elif cfg.eps > 0:
        counts.append(count_robust(run.clf, first, cfg.eps, cfg.eval_steps, seed=cfg.seed, **shard))
    counts = procs.all_sum(torch.tensor(counts, device=run.device)).tolist()
    cert = None
    if cfg.defence in CERTIFIED and procs.main:
        cert = certified_accuracy(run.clf, first, cfg.eps, _certified_method(cfg))
    if smoothing:
        return _Scores(counts[0] / len(test), None, None, counts[1] / len(test))
    return _Scores(counts[0] / len(test), counts[1] / len(first) if cfg.eps > 0 else None, cert)


def _record(run: _Run, epoch: int, stats: torch.Tensor, seconds: float, scores: _Scores) -> dict[str, Any]:
    """The epoch's line in metrics.json."""
    cfg, step = run.cfg, run.progress.step
    return {
        "epoch": epoch + 1,
        "step": step,
        "lr": run.opt.param_groups[0]["lr"],
        "eps": _eps_at(cfg, step - 1, run.total) if step else 0.0,
        "train_loss": float(stats[0] / stats[2].clamp_min(1)),
        "train_acc": float(stats[1] / stats[2].clamp_min(1)),
        "test_acc": scores.test_acc,
        "robust_acc": scores.robust_acc,
        "robust_label": f"PGD-{cfg.eval_steps} eps {cfg.eps:g} (first {min(cfg.eval_n, len(run.test_set))} test)",
        "certified_acc": scores.certified_acc,
        "certified_method": _certified_method(cfg) if scores.certified_acc is not None else None,
        "noise_acc": scores.noise_acc,
        "noise_label": f"under noise sigma {cfg.sigma:g} (test set)" if scores.noise_acc is not None else None,
        "epoch_time_s": round(seconds, 2),
        "images_per_s": round(float(stats[2]) / max(seconds, 1e-9), 1),
    }


def _save_epoch(run: _Run) -> None:
    """Checkpoint and curves after an epoch (rank 0)."""
    cfg = run.cfg
    checkpoint.save(run.out, run.clf.net, run.opt, run.progress)
    title = f"{cfg.dataset} {cfg.arch}, defence {cfg.defence}, eps {cfg.eps:g}"
    title += f", sigma {cfg.sigma:g}" if cfg.sigma is not None else ""
    training_curves(run.progress.history, run.out / "curves.png", title)


def _print_epoch(cfg: TrainConfig, record: dict[str, Any], seconds: float) -> None:
    rob, cert = record["robust_acc"], record["certified_acc"]
    rtxt = f", robust {100 * rob:.2f}%" if rob is not None else ""
    rtxt += f", {record['certified_method'].upper()}-certified {100 * cert:.2f}%" if cert is not None else ""
    rtxt += f", {100 * record['noise_acc']:.2f}% {record['noise_label']}" if record.get("noise_acc") is not None else ""
    print(
        f"epoch {record['epoch']}/{cfg.epochs}: loss {record['train_loss']:.4f}, "
        f"test {100 * record['test_acc']:.2f}%{rtxt}, {seconds:.1f} s ({record['images_per_s']:.0f} img/s)",
        flush=True,
    )


def _card(run: _Run, start_epoch: int, seconds: float, command: str | None) -> dict[str, Any]:
    """The run's card (card.json): what was trained, how, the last epoch's accuracies, and where."""
    cfg, history = run.cfg, run.progress.history
    last = history[-1]
    return {
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        "defence": cfg.defence,
        "eps": cfg.eps,
        "epochs": last["epoch"],
        "clean_acc": last["test_acc"],
        "robust_acc": last["robust_acc"],
        "robust_eval": last["robust_label"] if last["robust_acc"] is not None else None,
        "certified_acc": last.get("certified_acc"),
        "certified_method": last.get("certified_method"),
        **({"sigma": cfg.sigma, "noise_acc": last.get("noise_acc")} if cfg.defence in SMOOTHING else {}),
        "train_time_s": round(seconds + sum(h["epoch_time_s"] for h in history[:start_epoch]), 1),
        "processes": run.procs.world,
        "device": str(run.device),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "command": command,
    }
