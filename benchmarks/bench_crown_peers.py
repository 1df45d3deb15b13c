"""CROWN against auto_LiRPA's, same networks, same inputs, same bounds, one process (issue 19).

Run with the peers' virtual environment (auto_LiRPA 0.7.x from its public source, ``--no-deps``;
see bench_alpha_peers.py):

    /work/peers-venv/bin/python benchmarks/bench_crown_peers.py     # writes results/crown_peers.json

For each MODEL@EPS (zoo MNIST "small" networks, raw pixels): the first --n test images, the
L-inf ball clipped to [0, 1], the margin specification e_y - e_j. Two pairs of runs:

- ``pure``: advex ``spec_bounds(method="crown", intersect_ibp=False)`` against auto_LiRPA
  ``compute_bounds(method="CROWN")`` (its default: no comparison with IBP). Not equal work:
  advex back-substitutes every neuron, auto_LiRPA (``sparse_intermediate_bounds``, on by
  default) only those its IBP reference leaves unstable, keeping IBP's interval for the rest;
  where both relax the same neurons the bounds agree to ~1e-5.
- ``with IBP``: advex's default (every bound intersected with IBP's, only the neurons IBP leaves
  unstable back-substituted) against auto_LiRPA with ``compare_crown_with_ibp``: equal work,
  nearly the same bounds (see bench_alpha_peers.py), timed side by side.

Each pair runs in alternating calls (advex, auto_LiRPA, advex, ...) --reps times after a warm-up,
in batches of --batch images; the speed-up is the median of the per-pair ratios. Then one profiled
call of each (``products``): the self CPU time of its matrix products (matmuls and convolutions)
against the time of all its operators, the floor each could reach without doing fewer products.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

from advex.certify import margin_spec, trace
from advex.data.datasets import load_dataset
from advex.models import load

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_alpha_peers import CONFIGS, Lirpa, advex_run, lirpa_commit  # noqa: E402

# The operators that multiply matrices (matmuls and convolutions): their own time in a call is the
# floor its back-substitution cannot go below without doing fewer products.
PRODUCTS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm", "aten::mv", "aten::addmv",
            "aten::dot", "aten::mkldnn_convolution", "aten::_convolution", "aten::slow_conv_transpose2d",
            "aten::_slow_conv2d_forward", "aten::mkldnn_matmul", "aten::_nnpack_spatial_convolution")  # fmt: skip


def products(call, *args, **kwargs) -> dict:
    """One profiled call(*args, **kwargs): the self CPU time of the matrix products (PRODUCTS) and
    of everything."""
    from torch.profiler import profile

    with profile() as prof:
        call(*args, **kwargs)
    ops = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ops) / 1e6
    prod = sum(e.self_cpu_time_total for e in ops if e.key in PRODUCTS) / 1e6
    return {"products_s": round(prod, 4), "self_s": round(total, 4), "share": round(prod / total, 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=CONFIGS, help="MODEL@EPS (L-inf)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "crown_peers.json"))
    args = ap.parse_args(argv)
    x, y = load_dataset("mnist", "test").subset(args.n).floats()
    C = margin_spec(y, 10)
    res: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "auto_LiRPA": f"{version('auto_LiRPA')} ({lirpa_commit()})",
        "n": args.n,
        "batch": args.batch,
        "rows": [],
    }
    pairs = {"pure": ({"method": "crown", "intersect_ibp": False}, {}),
             "with IBP": ({"method": "crown"}, {"compare_crown_with_ibp": True})}  # fmt: skip
    for config in args.configs:
        name, eps = config.rsplit("@", 1)
        eps = float(eps)
        model = load(name, device="cpu").eval()
        net, nodes = model.net.eval(), trace(model, tuple(x.shape[1:]))
        lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        row: dict = {"config": config}
        for label, (kw, opts) in pairs.items():
            lirpa = Lirpa(net, x, opts)
            ours, _ = advex_run(nodes, x[:2], eps, C[:2], 2, **kw)  # warm-up
            lirpa(lower[:2], upper[:2], C[:2], "CROWN", 2)
            ta, tl, speed = [], [], []
            for _ in range(args.reps):
                b_ours, t = advex_run(nodes, x, eps, C, args.batch, **kw)
                t0 = time.perf_counter()
                b_lirpa = lirpa(lower, upper, C, "CROWN", args.batch)
                ta.append(t)
                tl.append(time.perf_counter() - t0)
                speed.append(tl[-1] / ta[-1])
            floor = {"advex": products(advex_run, nodes, x, eps, C, args.batch, **kw),
                     "auto_lirpa": products(lirpa, lower, upper, C, "CROWN", args.batch)}  # fmt: skip
            diff = (b_ours - b_lirpa).abs()
            row[label] = {
                "advex_s": round(statistics.median(ta), 4),
                "auto_lirpa_s": round(statistics.median(tl), 4),
                "speedup": round(statistics.median(speed), 3),
                "speedups": [round(v, 3) for v in speed],
                "max_abs_diff": float(diff.max()),
                "mean_bound_advex": round(float(b_ours.mean()), 5),
                "mean_bound_auto_lirpa": round(float(b_lirpa.mean()), 5),
                "products": floor,
            }
            r = row[label]
            print(
                f"{config:26s} {label:9s} advex {r['advex_s']:.3f} s  auto_LiRPA {r['auto_lirpa_s']:.3f} s  "
                f"speed-up {r['speedup']:.2f}x  max |diff| {r['max_abs_diff']:.1e}  products: advex "
                f"{floor['advex']['products_s']:.3f} of {floor['advex']['self_s']:.3f} s, auto_LiRPA "
                f"{floor['auto_lirpa']['products_s']:.3f} of {floor['auto_lirpa']['self_s']:.3f} s",
                flush=True,
            )
        res["rows"].append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
