"""Certification throughput and memory: IBP, CROWN and alpha-CROWN on the zoo models and CNN7.

    python benchmarks/bench_certify.py                 # all below, results/certify.json
    python benchmarks/bench_certify.py --only mnist-small-ibp-0.1 --n 500

For each model: the first --n test images, L-inf eps 0.1 (MNIST) or 2/255 (CIFAR-10); the
time of one forward pass over them (for scale: IBP should cost about two), and of `bounds`
on the margins (`certify(..., attack=False)`) for each method, images/s, certified accuracy,
and the peak resident memory of the process that ran it (each method in a fresh process, so
the numbers do not mix). CNN7 (the certified-training CNN with batch norm; random weights,
eval-mode batch norm with fresh statistics) is bounded on --cnn7-n CIFAR-10 images, to
measure CROWN's memory on it; a random network leaves nearly every neuron unstable, the
worst case for CROWN.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ["mnist-small", "mnist-small-ibp-0.1", "cifar10-small", "cifar10-small-pgd", "cnn7"]


def one(model: str, method: str, n: int, data_dir: str | None) -> dict:
    """Run in a fresh process: time and peak memory of one method on one model."""
    import torch

    from advex.certify import certify
    from advex.data.datasets import load_dataset

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if model == "cnn7":
        from advex.models.archs import make_classifier

        torch.manual_seed(0)
        clf = make_classifier("cifar10", "cnn7").eval()
        dataset, eps = "cifar10", 2 / 255
    else:
        from advex.models import load

        clf = load(model, device="cpu")
        dataset = "mnist" if model.startswith("mnist") else "cifar10"
        eps = 0.1 if dataset == "mnist" else 2 / 255
    x, y = load_dataset(dataset, "test", data_dir).subset(n).floats()
    with torch.no_grad():
        clf(x[:8])
        t0 = time.perf_counter()
        clf(x)
        forward = time.perf_counter() - t0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = certify(clf, x, y, eps=eps, method=method, attack=False, batch_size=min(n, 500))
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": model,
        "method": method,
        "images": n,
        "eps": eps,
        "forward_s": round(forward, 4),
        "bound_s": round(wall, 3),
        "images_per_s": round(n / wall, 1),
        "cost_in_forward_passes": round(wall / forward, 1),
        "certified_acc": res.certified_accuracy,
        "clean_acc": res.clean_accuracy,
        "peak_rss_mb": round(peak / 1024, 1),
        "rss_growth_mb": round((peak - before) / 1024, 1),
        "rss_at_start_mb": round(base / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=None)
    ap.add_argument("--methods", nargs="+", default=["ibp", "crown", "alpha-crown"])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--cnn7-n", type=int, default=4)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "certify.json"))
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.child[0], args.child[1], int(args.child[2]), args.data_dir)))
        return
    rows = []
    for model in args.only or MODELS:
        for method in args.methods:
            n = args.cnn7_n if model == "cnn7" else args.n
            if model == "cnn7" and method == "alpha-crown":
                continue
            cmd = [sys.executable, __file__, "--child", model, method, str(n)]
            if args.data_dir:
                cmd += ["--data-dir", args.data_dir]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            row = json.loads(out)
            print(json.dumps(row), flush=True)
            rows.append(row)
    import torch

    result = {
        "rows": rows,
        "command": "python benchmarks/bench_certify.py"
        + (f" --only {' '.join(args.only)}" if args.only else "")
        + f" --n {args.n} --cnn7-n {args.cnn7_n}",
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
