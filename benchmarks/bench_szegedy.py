"""Benchmark of issue 2: `advex demo` on the five sample photos, both solvers, and a PGD baseline.

    python benchmarks/bench_szegedy.py            # writes benchmarks/results/szegedy.json

1. Runs `advex demo` (L-BFGS, the default) and `advex demo --method adam` as a user would,
   timing the whole command; success is read from the demo's summary.json, where it is
   measured on the 8-bit PNGs re-read from disk.
2. A baseline of the same budget: targeted L2 PGD (normalised-gradient steps, projection
   onto the L2 ball and the [0, 1] box) with a per-image bisection over the radius, given
   as many gradient evaluations per image as L-BFGS spent (median), success judged on the
   8-bit image. Reports the smallest successful distortion it finds.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent


def run_demo(extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "advex", "demo", "--out", d, "--quiet", *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        print(proc.stdout)
        s = json.loads((Path(d) / "summary.json").read_text())
    imgs = s["images"]
    return {
        "command": "advex demo " + " ".join(extra),
        "wall_s": round(wall, 1),
        "attack_s": s["attack_time_s"],
        "attack_s_per_image": round(s["attack_time_s"] / len(imgs), 2),
        "success": f"{sum(r['success'] for r in imgs)}/{len(imgs)}",
        "median_rms": s["median_rms"],
        "median_l2": float(torch.tensor([r["l2"] for r in imgs]).median()),
        "median_linf_255": float(torch.tensor([float(r["linf_255"]) for r in imgs]).median()),
        "grad_evals_per_image": [r["grad_evals"] for r in imgs],
        "images": imgs,
    }


def pgd_l2_min(model, x, sizes, numel, target, budget: int, rounds: int = 5, eps0: float = 1.0) -> dict:
    """Targeted L2 PGD with bisection over eps (per image), `budget` gradient evals per image."""
    from advex.data import quantize

    n = x.shape[0]
    valid = torch.zeros_like(x, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes.tolist()):
        valid[i, :, :h, :w] = True
    steps = max(1, budget // rounds)
    lo = torch.zeros(n)
    hi = torch.full((n,), math.inf)
    eps = torch.full((n,), eps0)
    best = torch.full((n,), math.inf)
    for _ in range(rounds):
        r = torch.zeros_like(x)
        alpha = (2.5 * eps / steps).view(-1, 1, 1, 1)
        for _ in range(steps):
            r.requires_grad_(True)
            loss = F.cross_entropy(model(x + r, sizes), target, reduction="sum")
            (g,) = torch.autograd.grad(loss, r)
            g = g * valid
            with torch.no_grad():
                r = r - alpha * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                r = ((x + r).clamp(0, 1) - x) * valid
                scale = (eps / r.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
                r = r * scale.view(-1, 1, 1, 1)
        with torch.no_grad():
            xq = quantize(x + r)
            ok = model(xq, sizes).argmax(1) == target
            d = (xq - x).flatten(1).norm(dim=1)
        best = torch.where(ok, torch.minimum(best, d), best)
        hi = torch.where(ok, torch.minimum(hi, eps), hi)
        lo = torch.where(ok, lo, torch.maximum(lo, eps))
        eps = torch.where(torch.isfinite(hi), (lo + hi) / 2, eps * 2)
    rms = best / numel.sqrt()
    return {
        "success": f"{int(torch.isfinite(best).sum())}/{n}",
        "median_rms": float(rms.median()),
        "rms": [round(float(v), 6) for v in rms],
        "budget_per_image": steps * rounds,
    }


def main() -> None:
    torch.manual_seed(0)
    lbfgs = run_demo([])
    adam = run_demo(["--method", "adam"])
    adam_small = run_demo(["--method", "adam", "--lr", str(0.25 / 255)])

    from advex.data import pack, sample_photos
    from advex.models import load

    model = load("efficientnet-lite0", device="cpu")
    ims = sample_photos()
    x, sizes = pack([im.pixels for im in ims])
    numel = (sizes[:, 0] * sizes[:, 1] * 3).float()
    target = torch.full((len(ims),), 9)
    budget = int(torch.tensor(lbfgs["grad_evals_per_image"]).float().median())
    t0 = time.perf_counter()
    pgd = pgd_l2_min(model, x, sizes, numel, target, budget)
    pgd["time_s"] = round(time.perf_counter() - t0, 1)
    print("PGD baseline:", pgd)

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "lbfgs": lbfgs,
        "adam": adam,
        "adam_lr_0.25/255": adam_small,
        "pgd_l2_same_budget": pgd,
    }
    out = HERE / "results" / "szegedy.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    for k in ("lbfgs", "adam", "adam_lr_0.25/255"):
        r = result[k]
        print(
            f"| {k} | {r['success']} | {r['median_rms']:.5f} | {r['median_l2']:.3f} | {r['median_linf_255']:.0f} | "
            f"{sum(r['grad_evals_per_image']) / 5:.0f} | {r['attack_s_per_image']} | {r['wall_s']} |"
        )


if __name__ == "__main__":
    main()
