"""A training run's folder: what is written there, atomically, and read back to resume.

- ``config.json``: the resolved :class:`TrainConfig` and the command that started the run;
- ``model.safetensors``: the network's weights (``net.state_dict()``, without the
  normalisation wrapper);
- ``state.safetensors`` + ``state.json``: the optimiser's tensors, and its scalars with the
  epoch and step reached;
- ``metrics.json``: one record per epoch; ``card.json`` at the end.

Every file goes through a temporary sibling and a rename, and a checkpoint is written only
at the end of an epoch, so an interrupted run leaves its last complete epoch, ready to
resume. Nothing here unpickles: tensors are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advex.data import atomic_write_bytes
from advex.errors import AdvexError
from advex.models import load_weights, read_state_dict


@dataclass
class Progress:
    """Where a run stands: epochs done, optimiser steps taken, the per-epoch records."""

    epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)


def check_resumable(out: Path) -> None:
    """Raise unless ``out`` holds a checkpoint to resume."""
    if not (out / "state.json").is_file() or not (out / "model.safetensors").is_file():
        raise AdvexError(f"nothing to resume in {out}: no state.json / model.safetensors there")


def check_fresh(out: Path) -> None:
    """Raise if ``out`` already holds a run: starting again there would overwrite it."""
    if (out / "state.json").exists():
        raise AdvexError(f"{out} already holds a training run; pass --resume to continue it, or choose another --out")


def read_config(out: Path) -> dict[str, Any]:
    """The saved run's configuration (``config.json``), or a clear error if it is unreadable."""
    path = out / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdvexError(f"cannot resume the run in {out}: its config.json is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdvexError(f"cannot resume the run in {out}: config.json is unreadable ({type(e).__name__})") from None
    if not isinstance(config, dict):
        raise AdvexError(f"cannot resume the run in {out}: config.json does not hold a training configuration")
    return config


def write_config(out: Path, config: dict[str, Any]) -> None:
    """The run's first file: the folder is made here, once the data and the model are ready."""
    out.mkdir(parents=True, exist_ok=True)
    _write_json(config, out / "config.json")


def write_card(out: Path, card: dict[str, Any]) -> None:
    _write_json(card, out / "card.json")


def save(out: Path, net: nn.Module, opt: torch.optim.Optimizer, progress: Progress) -> None:
    """The end-of-epoch checkpoint: weights, optimiser state, progress and metrics."""
    _save_safetensors(net.state_dict(), out / "model.safetensors")
    tensors, meta = _optimizer_tensors(opt)
    _save_safetensors(tensors, out / "state.safetensors")
    _write_json({"epoch": progress.epoch, "step": progress.step, "optimizer": meta}, out / "state.json")
    _write_json(progress.history, out / "metrics.json")


def restore(out: Path, net: nn.Module, opt: torch.optim.Optimizer, arch: str) -> Progress:
    """Load the checkpoint in ``out`` into ``net`` (of architecture ``arch``) and ``opt``."""
    load_weights(net, read_state_dict(out / "model.safetensors"), str(out / "model.safetensors"), arch)
    meta = json.loads((out / "state.json").read_text())
    tensors = read_state_dict(out / "state.safetensors") if (out / "state.safetensors").exists() else {}
    _restore_optimizer(opt, tensors, meta["optimizer"])
    history = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else []
    return Progress(meta["epoch"], meta["step"], history)


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def _write_json(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimiser's state split into tensors (``"<param>.<name>"``, for safetensors) and the
    rest (param groups and per-parameter scalars such as Adam's step count, for JSON)."""
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
