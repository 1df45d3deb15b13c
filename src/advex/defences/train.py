"""`advex train`: standard and adversarial training on MNIST / CIFAR-10, on one process or many.

Data lives on the device as uint8 for the whole run; batches are index gathers, CIFAR
augmentation (``advex.data.augment_crop_flip``: random crop with 4-pixel padding,
horizontal flip) is vectorised on the device, so there is no per-sample Python in the hot
loop. Under ``torchrun`` the same call trains data-parallel (DistributedDataParallel; gloo
on CPU, NCCL on GPU): every rank draws the same permutation, takes its share, and gradients
are averaged.

Outputs in ``out``: ``model.safetensors`` (the network's weights), ``config.json``,
``metrics.json`` (one record per epoch), ``curves.png``, ``state.safetensors`` +
``state.json`` (optimiser and progress, for ``resume``) and, at the end, ``card.json``.
Every file is written atomically at the end of an epoch, so an interrupted run leaves the
last complete epoch behind, ready to resume.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from advex.data import augment_crop_flip
from advex.data.datasets import DATASETS, load_dataset
from advex.data.images import atomic_write_bytes
from advex.defences.losses import CERTIFIED, DEFENCES, LOSSES
from advex.errors import AdvexError
from advex.evaluation import certified_accuracy, count_correct, count_robust
from advex.models.archs import ARCHS, ibp_init, make_classifier
from advex.models.classifier import Classifier
from advex.report import training_curves

DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": dict(
        epochs=10,
        batch_size=128,
        lr=1e-3,
        optimizer="adam",
        weight_decay=0.0,
        attack_steps=20,
        eps_ramp=0.3,
        augment=False,
    ),
    "cifar10": dict(
        epochs=30,
        batch_size=128,
        lr=0.05,
        optimizer="sgd",
        weight_decay=5e-4,
        attack_steps=7,
        eps_ramp=0.3,
        augment=True,
    ),
}


@dataclass
class TrainConfig:
    """What to train and how. ``None`` fields take the per-dataset defaults (``DEFAULTS``)."""

    dataset: str = "mnist"
    arch: str = "small"
    defence: str = "none"
    eps: float = 0.0
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    attack_steps: int | None = None
    step_size: float | None = None  # PGD/TRADES step at full eps (default 2.5 * eps / steps)
    eps_ramp: float | None = None  # fraction of training over which eps grows linearly from 0
    trades_beta: float = 6.0
    kappa_end: float | None = None  # certified training: final weight of the natural loss (IBP 0.5, CROWN-IBP 0)
    init: str | None = None  # "default" (PyTorch's) or "ibp" (Shi et al. 2021; the default for certified training)
    fast_alpha: float = 1.25
    augment: bool | None = None
    eval_n: int = 1000  # test images for the per-epoch robust accuracy
    eval_steps: int = 20
    train_n: int | None = None  # train on the first n images only (smoke runs)
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs, tests)
    seed: int = 0
    data_dir: str | None = None

    def resolved(self) -> TrainConfig:
        if self.dataset not in DATASETS:
            raise AdvexError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.arch not in ARCHS:
            raise AdvexError(f"unknown architecture {self.arch!r}; choose from {', '.join(ARCHS)}")
        if self.defence not in DEFENCES:
            raise AdvexError(f"unknown defence {self.defence!r}; choose from {', '.join(DEFENCES)}")
        if not 0 <= self.eps <= 1:
            raise AdvexError(
                f"eps must be in [0, 1] (pixels in [0, 1]; e.g. 0.3 for MNIST, 8/255 for CIFAR), got {self.eps}"
            )
        if self.defence != "none" and self.eps == 0:
            raise AdvexError(f"--defence {self.defence} needs --eps > 0")
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in DEFAULTS[self.dataset].items():
            if kw[k] is None:
                kw[k] = v
        if kw["defence"] == "none":
            kw["eps_ramp"] = 0.0
        if kw["kappa_end"] is None:
            kw["kappa_end"] = 0.0 if kw["defence"] in ("crown-ibp", "convex") else 0.5
        if kw["init"] is None:
            kw["init"] = "ibp" if kw["defence"] in CERTIFIED else "default"
        if kw["init"] not in ("default", "ibp"):
            raise AdvexError(f"unknown init {kw['init']!r}; use default or ibp")
        if not 0 <= kw["kappa_end"] <= 1:
            raise AdvexError(f"kappa_end must be in [0, 1], got {kw['kappa_end']}")
        if kw["step_size"] is None:
            kw["step_size"] = 2.5 * kw["eps"] / max(kw["attack_steps"], 1)
        if kw["weight_decay"] < 0 or kw["lr"] <= 0:
            raise AdvexError(f"lr must be > 0 and weight_decay >= 0, got {kw['lr']} and {kw['weight_decay']}")
        if kw["optimizer"] not in ("sgd", "adam"):
            raise AdvexError(f"unknown optimizer {kw['optimizer']!r}; use sgd or adam")
        for k in ("epochs", "batch_size", "attack_steps"):
            if kw[k] < 1:
                raise AdvexError(f"{k} must be >= 1, got {kw[k]}")
        if not 0 <= kw["eps_ramp"] <= 1:
            raise AdvexError(f"eps_ramp is a fraction of training in [0, 1], got {kw['eps_ramp']}")
        return TrainConfig(**kw)


# ------------------------------------------------------------------ distributed
def _dist_context(device: torch.device) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _all_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


# ------------------------------------------------------------------ checkpoints
def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def _write_json(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items() if isinstance(v, torch.Tensor)}
    scalars = {
        str(i): {k: v for k, v in st.items() if not isinstance(v, torch.Tensor)} for i, st in sd["state"].items()
    }
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    for i, sc in meta["scalars"].items():
        state.setdefault(int(i), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".advex-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise AdvexError(f"cannot write to output folder {out}: {e.strerror or e}") from None


# ------------------------------------------------------------------ training
def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    warm = max(1, total // 50)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _eps_at(cfg: TrainConfig, step: int, total: int) -> float:
    ramp = int(cfg.eps_ramp * total)
    return cfg.eps if ramp == 0 or step >= ramp else cfg.eps * (step + 1) / ramp


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

    ``progress`` shows a bar per epoch; ``verbose`` prints one line per epoch.
    """
    from advex.models.zoo import resolve_device

    out = Path(out)
    if resume:
        if not (out / "state.json").is_file() or not (out / "model.safetensors").is_file():
            raise AdvexError(f"nothing to resume in {out}: no state.json / model.safetensors there")
        names = {f.name for f in fields(TrainConfig)}
        saved = {k: v for k, v in json.loads((out / "config.json").read_text()).items() if k in names}
        overrides = {k: v for k, v in asdict(cfg).items() if k == "epochs" and v is not None}
        cfg = TrainConfig(**{**saved, **overrides})
    cfg = cfg.resolved()
    dev = resolve_device(device)
    rank, world, dev = _dist_context(dev)
    if cfg.batch_size % world:
        raise AdvexError(f"batch size {cfg.batch_size} is not divisible by the {world} processes")
    if not resume and (out / "state.json").exists():
        raise AdvexError(f"{out} already holds a training run; pass --resume to continue it, or choose another --out")
    if rank == 0:
        _check_writable(out)
    if download and rank == 0:  # one process fetches; the others wait for it
        for split in ("train", "test"):
            load_dataset(cfg.dataset, split, cfg.data_dir, download=True)
    if world > 1:
        dist.barrier()
    torch.manual_seed(cfg.seed)
    train_set = load_dataset(cfg.dataset, "train", cfg.data_dir).subset(cfg.train_n).to(dev)
    test_set = load_dataset(cfg.dataset, "test", cfg.data_dir).to(dev)
    clf = make_classifier(cfg.dataset, cfg.arch).to(dev)
    if cfg.init == "ibp":
        ibp_init(clf.net)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(clf.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(clf.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    history: list[dict] = []
    start_epoch, step = 0, 0
    if resume:
        from advex.models.zoo import load_weights, read_state_dict

        load_weights(clf.net, read_state_dict(out / "model.safetensors"), str(out / "model.safetensors"), cfg.arch)
        meta = json.loads((out / "state.json").read_text())
        _restore_optimizer(
            opt,
            read_state_dict(out / "state.safetensors") if (out / "state.safetensors").exists() else {},
            meta["optimizer"],
        )
        start_epoch, step = meta["epoch"], meta["step"]
        history = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else []
    model: nn.Module = clf
    if world > 1:
        model = nn.parallel.DistributedDataParallel(clf, device_ids=[dev.index] if dev.type == "cuda" else None)
    loss_fn = LOSSES[cfg.defence]
    per_rank = len(train_set) // world
    local_bs = cfg.batch_size // world
    steps_per_epoch = max(1, per_rank // local_bs)
    total = steps_per_epoch * cfg.epochs
    if rank == 0:
        _write_json(asdict(cfg) | {"command": command}, out / "config.json") if not resume else None
    t_start = time.perf_counter()
    card: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        clf.train()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(len(train_set), generator=g)[rank::world][: steps_per_epoch * local_bs].to(dev)
        gen = torch.Generator(dev).manual_seed(cfg.seed * 7919 + epoch * 31 + rank)
        t0 = time.perf_counter()
        tot_loss = torch.zeros((), device=dev)
        tot_correct = torch.zeros((), device=dev)
        seen = 0
        bar = range(steps_per_epoch)
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(bar, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False)
        for s in bar:
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
            idx = perm[s * local_bs : (s + 1) * local_bs]
            x, y = train_set.floats(idx)
            if cfg.augment:
                x = augment_crop_flip(x, gen)
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, step, total)
            eps = _eps_at(cfg, step, total)
            loss, z = loss_fn(model, clf, x, y, eps, cfg, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tot_loss += loss.detach() * len(y)
            tot_correct += (z.detach().argmax(1) == y).sum()
            seen += len(y)
            if progress and rank == 0 and s % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", eps=f"{eps:.3f}")
        train_time = time.perf_counter() - t0
        stats = _all_sum(torch.stack([tot_loss, tot_correct, torch.tensor(float(seen), device=dev)]), world)
        clf.eval()  # this rank's counts of correct images, summed over the ranks
        first = test_set.subset(cfg.eval_n)
        counts = [count_correct(clf, test_set, rank=rank, world=world)]
        if cfg.eps > 0:
            counts.append(count_robust(clf, first, cfg.eps, cfg.eval_steps, seed=cfg.seed, rank=rank, world=world))
        counts = _all_sum(torch.tensor(counts, device=dev), world).tolist()
        test_acc = counts[0] / len(test_set)
        rob = counts[1] / len(first) if cfg.eps > 0 else None
        cert = None
        cert_method = "crown" if cfg.defence == "convex" else "ibp"  # what the defence is tight for
        if cfg.defence in CERTIFIED and rank == 0:
            cert = certified_accuracy(clf, first, cfg.eps, cert_method)
        record = {
            "epoch": epoch + 1,
            "step": step,
            "lr": opt.param_groups[0]["lr"],
            "eps": _eps_at(cfg, step - 1, total) if step else 0.0,
            "train_loss": float(stats[0] / stats[2].clamp_min(1)),
            "train_acc": float(stats[1] / stats[2].clamp_min(1)),
            "test_acc": test_acc,
            "robust_acc": rob,
            "robust_label": f"PGD-{cfg.eval_steps} eps {cfg.eps:g} (first {min(cfg.eval_n, len(test_set))} test)",
            "certified_acc": cert,
            "certified_method": cert_method if cert is not None else None,
            "epoch_time_s": round(train_time, 2),
            "images_per_s": round(float(stats[2]) / max(train_time, 1e-9), 1),
        }
        history.append(record)
        if rank == 0:
            _save_safetensors(clf.net.state_dict(), out / "model.safetensors")
            tensors, meta = _optimizer_tensors(opt)
            _save_safetensors(tensors, out / "state.safetensors")
            _write_json({"epoch": epoch + 1, "step": step, "optimizer": meta}, out / "state.json")
            _write_json(history, out / "metrics.json")
            title = f"{cfg.dataset} {cfg.arch}, defence {cfg.defence}, eps {cfg.eps:g}"
            training_curves(history, out / "curves.png", title)
            if verbose:
                rtxt = f", robust {100 * rob:.2f}%" if rob is not None else ""
                rtxt += f", {cert_method.upper()}-certified {100 * cert:.2f}%" if cert is not None else ""
                print(
                    f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f}, "
                    f"test {100 * test_acc:.2f}%{rtxt}, {train_time:.1f} s ({record['images_per_s']:.0f} img/s)",
                    flush=True,
                )
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    total_time = time.perf_counter() - t_start
    if history:
        last = history[-1]
        card = {
            "dataset": cfg.dataset,
            "arch": cfg.arch,
            "defence": cfg.defence,
            "eps": cfg.eps,
            "epochs": last["epoch"],
            "clean_acc": last["test_acc"],
            "robust_acc": last["robust_acc"],
            "robust_eval": last["robust_label"] if cfg.eps > 0 else None,
            "certified_acc": last.get("certified_acc"),
            "certified_method": last.get("certified_method"),
            "train_time_s": round(total_time + sum(h["epoch_time_s"] for h in history[:start_epoch]), 1),
            "processes": world,
            "device": str(dev),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
            "command": command,
        }
        if rank == 0:
            _write_json(card, out / "card.json")
    return TrainRun(clf, card, history, rank, world)


@dataclass
class TrainRun:
    model: Classifier
    card: dict[str, Any]
    history: list[dict]
    rank: int = 0
    world: int = 1
