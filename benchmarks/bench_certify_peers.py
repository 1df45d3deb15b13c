"""Certification against the reference: advex's CROWN with the Wong-Kolter slope vs the dual bound
of ``convex-adversarial`` (Wong & Kolter's own library), same network, same inputs, one run.

Run with the peers' virtual environment (convex-adversarial installs from PyPI there):

    /work/peers-venv/bin/python benchmarks/bench_certify_peers.py
    /work/peers-venv/bin/python benchmarks/bench_certify_peers.py --models mnist-small --eps 0.1 --n 20

For each zoo MNIST model (the Wong et al. 2018 "small" network; its nn.Sequential goes to both) and
eps: the first --n test images, the L-inf ball clipped to [0, 1] (convex-adversarial's
``bounded_input=True``), the margin specification e_y - e_j (its ``RobustBounds``): ``DualNetwork(net,
X, eps, bounded_input=True)(c)`` against ``advex.certify.bounds(model, X, eps=eps, method="crown",
slope="wong-kolter", C=c, intersect_ibp=False)``. With these slopes the linear relaxation equals the
dual bound of Wong & Kolter (2018) exactly. By default advex also intersects every bound with IBP's
and back-substitutes only the neurons IBP leaves unstable (both off in the exact comparison); the
default is timed and compared too (usually tighter, occasionally a little looser: the Wong-Kolter
slope u / (u - l) changes with the intermediate bounds). Both run in batches of --batch images, timed after a
warm-up, with the same torch thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

import torch

from advex.certify import bounds, margin_spec
from advex.data.datasets import load_dataset
from advex.models import load

HERE = Path(__file__).resolve().parent


def dual_bounds(net, x, y, eps, batch):
    from convex_adversarial import DualNetwork

    out = []
    for s in range(0, x.shape[0], batch):
        xb, yb = x[s : s + batch], y[s : s + batch]
        c = margin_spec(yb, 10)
        with torch.no_grad():
            dual = DualNetwork(net, xb, eps, bounded_input=True)
            out.append(dual(c))
    return torch.cat(out)


def advex_bounds(model, x, y, eps, batch, exact=True):
    return bounds(model, x, eps=eps, method="crown", slope="wong-kolter", C=margin_spec(y, 10), batch_size=batch,
                  intersect_ibp=not exact).lower  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mnist-small", "mnist-small-pgd"])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.1])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "certify_peers.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", "test", args.data_dir)
    x, y = data.floats(slice(0, args.n))
    rows = []
    for name in args.models:
        model = load(name, device="cpu").eval()
        net = model.net  # the raw nn.Sequential (MNIST models have no normalisation)
        advex_bounds(model, x[:2], y[:2], 0.05, 2)  # warm-up
        dual_bounds(net, x[:2], y[:2], 0.05, 2)
        for eps in args.eps:
            t0 = time.perf_counter()
            a = advex_bounds(model, x, y, eps, args.batch)
            ta = time.perf_counter() - t0
            t0 = time.perf_counter()
            d = dual_bounds(net, x, y, eps, args.batch)
            td = time.perf_counter() - t0
            t0 = time.perf_counter()
            a_default = advex_bounds(model, x, y, eps, args.batch, exact=False)
            t_default = time.perf_counter() - t0
            rel = ((a - d).abs() / d.abs().clamp_min(1e-6)).flatten()
            row = {
                "model": name,
                "eps": eps,
                "images": args.n,
                "advex_time_s": round(ta, 3),
                "convex_adversarial_time_s": round(td, 3),
                "speedup": round(td / ta, 1),
                "advex_default_time_s": round(t_default, 3),
                "speedup_default": round(td / t_default, 1),
                "default_tighter_by_more_than_1e-4": int(((a_default - d) > 1e-4 * d.abs().clamp_min(1e-6)).sum()),
                "default_looser_by_more_than_1e-4": int(((d - a_default) > 1e-4 * d.abs().clamp_min(1e-6)).sum()),
                "max_rel_diff": float(rel.max()),
                "median_rel_diff": float(rel.median()),
                "advex_tighter_by_more_than_1e-4": int(((a - d) > 1e-4 * d.abs().clamp_min(1e-6)).sum()),
                "advex_looser_by_more_than_1e-4": int(((d - a) > 1e-4 * d.abs().clamp_min(1e-6)).sum()),
                "mean_margin_bound": round(float(a.mean()), 4),
                "certified_advex": int((a > 0).all(1).sum()),
                "certified_convex_adversarial": int((d > 0).all(1).sum()),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "rows": rows,
        "versions": {"convex-adversarial": version("convex-adversarial"), "torch": torch.__version__},
        "command": f"python benchmarks/bench_certify_peers.py --models {' '.join(args.models)} --eps "
        f"{' '.join(map(str, args.eps))} --n {args.n} --batch {args.batch} --threads {args.threads}",
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, {args.threads} threads",
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
