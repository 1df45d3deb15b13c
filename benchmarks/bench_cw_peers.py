"""C&W L2 against Foolbox's and torchattacks' at equal budget, one run (issue 19).

Run with the peers' virtual environment (never a dependency of advex; see bench_peers.py):

    /work/peers-venv/bin/python benchmarks/bench_cw_peers.py      # writes benchmarks/results/cw_peers.json

Budget, the same for every library: c = 1 to start, 100 Adam steps of 0.01 per search step,
1 or 5 steps of binary search over c, kappa 0, no early abort. Models: the zoo's mnist-small
and cifar10-small on the first ``--n`` test images they classify correctly. Each library gets
the same module and tensors; timings are one call each, one after the other, after a small
warm-up call. Success is re-predicted here from the returned images. Foolbox returns an
all-black image for an image it did not break; most models misclassify a black image, so its
own criterion counts that as a success: the table gives its success both ways ("as returned"
and without the black images). Median L2: over the successes; "median L2 (inf)" counts a
failure as infinitely far (the median over all images); "median L2, common" is over the images
that every library broke.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from advex.attacks import CW
from advex.data.datasets import load_dataset
from advex.models import load

OUT = Path(__file__).resolve().parent / "results" / "cw_peers.json"


def summary(model, x, y, adv, t) -> tuple[dict, torch.Tensor, torch.Tensor]:
    adv = torch.as_tensor(adv, dtype=torch.float32)
    with torch.no_grad():
        ok = model(adv).argmax(1) != y
    l2 = (adv - x).flatten(1).norm(dim=1)
    black = adv.flatten(1).abs().amax(1) == 0
    real = ok & ~black
    inf = torch.where(real, l2, torch.full_like(l2, float("inf")))
    row = {
        "time_s": round(t, 2),
        "success_as_returned": round(float(ok.float().mean()), 4),
        "black_images": int(black.sum()),
        "success": round(float(real.float().mean()), 4),
        "median_l2": round(float(l2[real].median()), 4) if real.any() else None,
        "median_l2_inf": round(float(inf.median()), 4),
    }
    return row, real, l2


def attack_calls(model, fmodel, x, y, ss: int) -> dict:
    """One call per library at the budget, ``ss`` steps of search over c."""
    import foolbox as fb
    import torchattacks

    runs = {
        "advex": lambda: CW(c=1.0, steps=100, lr=0.01, search_steps=ss)(model, x, y).x_adv,
        "advex box=tanh": lambda: CW(c=1.0, steps=100, lr=0.01, search_steps=ss, box="tanh")(model, x, y).x_adv,
        "foolbox": lambda: fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=ss, steps=100, stepsize=0.01, initial_const=1.0, abort_early=False
        ).run(fmodel, x, fb.criteria.Misclassification(y)),
    }
    if ss == 1:  # torchattacks' CW has no search over c
        runs["torchattacks"] = lambda: torchattacks.CW(model, c=1, kappa=0, steps=100, lr=0.01)(x, y)
    return runs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist-small,cifar10-small")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import foolbox as fb
    import torchattacks

    res: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "versions": {"foolbox": fb.__version__, "torchattacks": torchattacks.__version__},
        "budget": "c=1, 100 steps, lr 0.01, kappa 0, no early abort",
        "runs": [],
    }
    for name in args.models.split(","):
        ds = "mnist" if name.startswith("mnist") else "cifar10"
        model = load(name, device="cpu").eval()
        x, y = load_dataset(ds, "test").subset(int(args.n * 1.4)).floats()
        with torch.no_grad():
            keep = model(x).argmax(1) == y
        x, y = x[keep][: args.n], y[keep][: args.n]
        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        for ss in (1, 5):
            runs = attack_calls(model, fmodel, x, y, ss)
            CW(steps=2)(model, x[:8], y[:8])  # warm-up
            rows, oks = {}, []
            for lib, fn in runs.items():
                t0 = time.perf_counter()
                adv = fn()
                row, real, l2 = summary(model, x, y, adv, time.perf_counter() - t0)
                rows[lib] = row
                oks.append((lib, real, l2))
            common = torch.stack([r for _, r, _ in oks]).all(0)
            for lib, _, l2 in oks:
                rows[lib]["median_l2_common"] = round(float(l2[common].median()), 4) if common.any() else None
            run = {"model": name, "images": len(x), "search_steps": ss, "common": int(common.sum()), "libraries": rows}
            res["runs"].append(run)
            print(f"{name}, {len(x)} images, {ss} search step(s), {int(common.sum())} broken by all:", flush=True)
            for lib, r in rows.items():
                print(
                    f"  {lib:15s} {r['time_s']:7.2f} s  success {r['success']:.3f} "
                    f"(as returned {r['success_as_returned']:.3f})  median L2 {r['median_l2']}  "
                    f"(inf) {r['median_l2_inf']}  common {r['median_l2_common']}",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
