"""Data-parallel training under ``torchrun``: the process group and this process's place in it
come from :mod:`advex.evaluation.shard` (evaluation runs split the same way); the model is
wrapped in DistributedDataParallel, which averages the gradients over the processes."""

from __future__ import annotations

import torch
from torch import nn

from advex.evaluation import Processes, setup

__all__ = ["Processes", "data_parallel", "setup"]


def data_parallel(model: nn.Module, device: torch.device, procs: Processes) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when there are several processes (gradients
    averaged over them in ``backward``), else ``model`` itself."""
    if procs.world <= 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
