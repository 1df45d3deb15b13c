"""Training throughput against data-loading throughput (issue 3), on this machine.

    python benchmarks/bench_train.py      # writes benchmarks/results/train_throughput.json

For each dataset: images/s of producing training batches alone (index gather from the
uint8 tensor on the device, conversion to float, and for CIFAR-10 the random crop + flip),
against images/s of `advex train`'s own loop (batches, attack, forward, backward, optimiser;
evaluation excluded) for the standard and the PGD objective of the `small` network, batch
128. Loading must be far faster than training for it not to be the bottleneck. Also times one epoch of standard MNIST
training with `advex train`'s loop.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from advex.data import augment_crop_flip
from advex.data.datasets import load_dataset
from advex.defences import TrainConfig, train

OUT = Path(__file__).resolve().parent / "results" / "train_throughput.json"


def rate(fn, n_images: int, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return n_images * reps / (time.perf_counter() - t0)


def measure(dataset: str) -> dict:
    ds = load_dataset(dataset, "train")
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(ds), generator=gen)
    counter = [0]

    def load_batch():
        idx = perm[(counter[0] * 128) % (len(ds) - 128) :][:128]
        counter[0] += 1
        x, y = ds.floats(idx)
        if dataset == "cifar10":
            x = augment_crop_flip(x, gen)
        return x, y

    row = {"loading_img_per_s": round(rate(load_batch, 128, 200))}
    eps = 0.3 if dataset == "mnist" else 8 / 255
    for defence in ("none", "pgd"):
        # the real training loop (advex train), timed without its evaluation
        cfg = TrainConfig(
            dataset=dataset,
            arch="small",
            defence=defence,
            eps=eps if defence == "pgd" else 0.0,
            epochs=1,
            max_steps=200 if defence == "none" else 60,
            eps_ramp=0.0,
            eval_n=10,
        )
        run = train(cfg, f"/tmp/advex-bench-{dataset}-{defence}", progress=False, verbose=False)
        h = run.history[0]
        row[f"train_{defence}_img_per_s"] = round(h["step"] * 128 / h["epoch_time_s"])
    return row


def main() -> None:
    torch.manual_seed(0)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "batch_size": 128,
    }
    for dataset in ("mnist", "cifar10"):
        results[dataset] = measure(dataset)
        print(dataset, results[dataset])
    t0 = time.perf_counter()
    run = train(
        TrainConfig(dataset="mnist", arch="small", epochs=1), "/tmp/advex-bench-train", progress=False, verbose=False
    )
    results["mnist_small_standard_epoch_s"] = run.history[0]["epoch_time_s"]
    results["mnist_small_standard_epoch_with_eval_s"] = round(time.perf_counter() - t0, 1)
    print(results)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
