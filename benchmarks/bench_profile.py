"""Where the time goes: the profiler's view behind three figures of docs/benchmarks.md (issue 19).

    python benchmarks/bench_profile.py          # writes benchmarks/results/profile.json

- ``conv``: C&W (50 steps) on mnist-small (the first 256 MNIST test images) against a tight loop
  of 50 forward+backward passes of the same batch: the time per call of the network's own
  convolutions (``mkldnn_convolution`` forward, ``convolution_backward``) in each.
- ``crown``: advex's default CROWN on mnist-small at L-inf 0.02 (the first 100 MNIST test
  images, margin specification): self CPU time by operator, grouped into matrix products
  (mm, bmm, addmm, _convolution), patch cutting and folding (im2col, col2im) and the rest.
- ``compile``: PGD-10 (no early stop) on mnist-small, fp32 against ``model.fast(precision="fp32",
  compile=True)``: the compiling call's time, then 5 alternating calls each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from advex.attacks import CW, PGD
from advex.certify import margin_spec, trace
from advex.certify.bounds import InputSet, spec_bounds
from advex.data.datasets import load_dataset
from advex.models import load

OUT = Path(__file__).resolve().parent / "results" / "profile.json"
PRODUCTS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::_convolution"}
PATCHES = {"aten::im2col", "aten::col2im"}


def self_ms(prof) -> dict[str, tuple[float, int]]:
    """Operator -> (self CPU ms, calls)."""
    return {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()}


def conv_section(model, x, y) -> dict:
    for p in model.parameters():
        p.requires_grad_(False)

    def tight():
        for _ in range(50):
            xa = x.clone().requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)

    attack = CW(c=1.0, steps=50)
    out = {}
    for label, fn in (("tight loop", tight), ("inside C&W", lambda: attack(model, x, y))):
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        ops = self_ms(prof)
        out[label] = {op: {"ms_per_call": round(ms / n, 3), "calls": n} for op, (ms, n) in ops.items()
                      if op in ("aten::convolution_backward", "aten::mkldnn_convolution")}  # fmt: skip
    return out


def crown_section(model, x, y) -> dict:
    nodes = trace(model, tuple(x.shape[1:]))
    C = margin_spec(y, 10)
    with torch.no_grad():
        spec_bounds(nodes, InputSet.ball(x[:2], 0.02, "linf"), C[:2], method="crown")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            spec_bounds(nodes, InputSet.ball(x, 0.02, "linf"), C, method="crown")
    ops = self_ms(prof)
    total = sum(ms for ms, _ in ops.values())
    products = sum(ms for op, (ms, _) in ops.items() if op in PRODUCTS)
    patches = sum(ms for op, (ms, _) in ops.items() if op in PATCHES)
    top = sorted(ops.items(), key=lambda kv: -kv[1][0])[:12]
    return {
        "total_self_cpu_s": round(total / 1e3, 3),
        "share_products": round(products / total, 3),
        "share_im2col_col2im": round(patches / total, 3),
        "share_rest": round(1 - (products + patches) / total, 3),
        "top": {op: {"s": round(ms / 1e3, 3), "calls": n} for op, (ms, n) in top},
    }


def compile_section(name, x, y) -> dict:
    model = load(name, device="cpu").eval()
    attack = PGD(eps=0.1, steps=10, early_stop=False)
    t0 = time.perf_counter()
    twin = model.fast(precision="fp32", compile=True)
    attack(twin, x, y)
    first = time.perf_counter() - t0
    attack(model, x, y)
    plain, compiled = [], []
    for _ in range(5):
        for fn, ts in ((lambda: attack(model, x, y), plain), (lambda: attack(twin, x, y), compiled)):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return {"first_call_with_compiling_s": round(first, 2), "fp32_s": round(statistics.median(plain), 4),
            "compiled_s": round(statistics.median(compiled), 4)}  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    x, y = load_dataset("mnist", "test").subset(256).floats()
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "conv": conv_section(load("mnist-small", device="cpu").eval(), x, y),
        "crown": crown_section(load("mnist-small", device="cpu").eval(), x[:100], y[:100]),
        "compile": compile_section("mnist-small", x, y),
    }
    print(json.dumps(res, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
