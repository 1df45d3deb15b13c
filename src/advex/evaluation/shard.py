"""Runs split across processes under ``torchrun``: the process group, this process's rank
among ``world``, sums and gathers over the processes, and this process's share of the work.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) everything here is the identity: one
process, rank 0, no process group. Under ``torchrun`` the group is gloo on CPU and NCCL on
GPU (one GPU per process, ``LOCAL_RANK``). Training (``advex.defences``) gives every rank
the same permutation of the training set and takes every ``world``-th index of it, and
DistributedDataParallel averages the gradients; evaluation, certification and the one-pixel
attack deal out batches of images round-robin (:mod:`advex.evaluation.runner`) and gather
the results on rank 0, which alone writes.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: ``rank`` of ``world`` (0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The process that writes files and prints (rank 0)."""
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes, in place."""
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            dist.barrier()

    def share(self, perm: torch.Tensor, n: int) -> torch.Tensor:
        """This process's ``n`` indices of ``perm`` (the same permutation on every rank):
        every ``world``-th one from position ``rank``, so the shares are disjoint."""
        return perm[self.rank :: self.world][:n]


def setup(device: torch.device) -> tuple[Processes, torch.device]:
    """Join the process group if started by torchrun (``WORLD_SIZE`` > 1), and the device this
    process trains on: under torchrun on CUDA, the GPU of its ``LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes(), device
    if not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave)
    return Processes(dist.get_rank(), dist.get_world_size()), device


def _leave() -> None:
    """Leave the process group before the interpreter exits: a gloo group torn down by the
    exit itself can abort the process ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.destroy_process_group()


def gather(procs: Processes, obj):
    """Every process's ``obj`` as a list, rank order, on rank 0 (``None`` elsewhere); ``[obj]``
    with one process. Objects travel pickled between the processes of this run only."""
    if procs.world <= 1:
        return [obj]
    out = [None] * procs.world if procs.main else None
    dist.gather_object(obj, out, dst=0)
    return out
