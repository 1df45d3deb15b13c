"""Certified-training step throughput: IBP, CROWN-IBP and the Wong-Kolter convex loss.

    python benchmarks/bench_certified_training.py      # results/certified_training.json

images/s of one optimiser step of each certified loss (worst-case bound, forward, backward,
Adam step) on MNIST batches of --batch, at full training eps (kappa at its final value,
CROWN-IBP's beta at 1, its most expensive setting at the start of the ramp), for each
network state: IBP-initialised (the start of training, where most neurons are unstable)
and IBP-trained (a zoo model: few unstable neurons, the state most of training is spent
in). The cost of CROWN-IBP and convex grows with the number of unstable neurons; IBP's does not.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from advex.data.datasets import load_dataset
from advex.defences import TrainConfig
from advex.defences.losses import LOSSES
from advex.models import load
from advex.models.archs import ibp_init, make_classifier

OUT = Path(__file__).resolve().parent / "results" / "certified_training.json"


def net(arch: str, state: str):
    if state == "trained":
        name = {"small": "mnist-small-ibp-0.1"}.get(arch)
        if name is None:
            raise ValueError(f"no IBP-trained MNIST {arch} in the zoo")
        clf = load(name, device="cpu")
        clf.requires_grad_(True)
    else:
        torch.manual_seed(0)
        clf = make_classifier("mnist", arch)
        ibp_init(clf.net)
    return clf.train()


def step_rate(clf, defence: str, x, y, eps: float, steps: int) -> float:
    cfg = TrainConfig(defence=defence, eps=eps).resolved()
    loss_fn = LOSSES[defence]
    opt = torch.optim.Adam(clf.parameters(), lr=1e-4)
    if defence == "crown-ibp":  # beta = 1 - eps / cfg.eps: bound at a tiny eps fraction for beta ~ 1
        cfg.eps = eps * 1e6
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss, _ = loss_fn(clf, clf, x, y, eps, cfg, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return len(x) / (sum(times) / len(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--archs", nargs="*", default=["small", "large", "cnn7"])
    ap.add_argument("--convex-archs", nargs="*", default=["small"], help="the convex loss is for small networks")
    args = ap.parse_args()
    x, y = load_dataset("mnist", "train").subset(args.batch).floats()
    rows = []
    for arch in args.archs:
        for state in ("init", "trained"):
            try:
                net(arch, state)
            except Exception as e:  # only the small network has a trained zoo model
                print(f"skip {arch} {state}: {e}")
                continue
            for defence in ("ibp", "crown-ibp", "convex")[: 3 if arch in args.convex_archs else 2]:
                r = step_rate(net(arch, state), defence, x, y, args.eps, args.steps if defence != "convex" else 2)
                rows.append({"arch": arch, "state": state, "defence": defence, "images_per_s": round(r, 1)})
                print(f"{arch:6s} {state:8s} {defence:10s} {r:9.1f} images/s", flush=True)
    OUT.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                "command": "python benchmarks/bench_certified_training.py",
                "batch": args.batch,
                "eps": args.eps,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
