"""The one-pixel attack (Su, Vargas & Sakurai 2019): advex against torchattacks and ART, one run.

Run with the peers' virtual environment (never a dependency of advex; see bench_peers.py):

    /work/peers-venv/bin/python benchmarks/bench_onepixel_peers.py              # 20 images, 1 pixel
    /work/peers-venv/bin/python benchmarks/bench_onepixel_peers.py --n 5 --skip-advex
    /work/peers-venv/bin/python benchmarks/bench_onepixel_peers.py --pixels 3 --targeted

Same model module, same images (the first ``--n`` test images the model classifies correctly), same
population (400) and generations (``--iterations``, default 100) for all three:

- advex: ``OnePixel(pixels, population, iterations, seed)(model, x, y, target)``, the whole batch at once.
- torchattacks 3.5.1 ``OnePixel(model, pixels, steps, popsize, inf_batch=128)``: its ``popsize`` is a
  multiplier, ``max(1, int(popsize / D))`` with D = pixels * (2 + C) DE parameters, and SciPy's DE makes
  ``max(5, multiplier * D)`` members; ``popsize=400`` gives 400 for 1 or 5 RGB pixels, 390 for 3.
- ART 1.20.1 ``PixelAttack(classifier, th=pixels, es=1, max_iter)``: es=1 selects differential evolution
  (es=0, the default of the parent class, is CMA-ES), ``th`` is the number of pixels (``th=None`` would
  binary-search it over 1..127, each step a full attack), and the population is hard-wired to
  ``max(1, 400 // D) * D`` (400 for 1 or 5 RGB pixels, 390 for 3); not configurable.

Both peers run one image at a time with a copy of SciPy's ``differential_evolution`` patched to evaluate
a whole generation in one batched call (batches of 128): strategy best1bin, mutation dithered in
[0.5, 1) per generation, recombination 1 (no crossover), no polishing, atol=-1 (no convergence stop),
and a callback after every generation that predicts the best member and stops at the first success.
The paper's DE is rand1 with F=0.5, no crossover, RGB initialised from N(128, 127) and a probability
stop (true class < 5%); neither peer is exactly that.

Model queries are images forwarded through the model, counted by a forward pre-hook on the one module
that all three receive (so advex's own ``extra["queries"]`` is cross-checked). Only the attack calls
are timed. Success is re-predicted from the returned images (untargeted: argmax != y; targeted:
argmax == (y + 1) % 10); L0 is the number of pixel locations whose value changed by more than
``L0_TOL`` in any channel (ART goes through a 0..255 float round trip).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from advex.data.datasets import load_dataset
from advex.models import load

OUT = Path(__file__).resolve().parent / "results" / "onepixel_peers.json"
L0_TOL = 1e-5
INF_BATCH = 128  # both peers' default inference batch (torchattacks inf_batch, ART predict batch_size)


class QueryCounter:
    """Counts images forwarded through ``module`` (a forward pre-hook; the module itself is unchanged)."""

    def __init__(self, module: torch.nn.Module):
        self.images = 0
        module.register_forward_pre_hook(self._hook)

    def _hook(self, _module, args):
        self.images += int(args[0].shape[0])


def pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def de_population(pixels: int, channels: int, popsize: int = 400) -> int:
    """The real population both peers' SciPy DE makes from a requested 400."""
    d = pixels * (2 + channels)
    return max(5, max(1, popsize // d) * d)


def evaluate(model, x, y, x_adv, target, pixels: int) -> dict:
    """Success re-predicted from the returned images, and their L0 in pixel locations."""
    x_adv = torch.as_tensor(np.asarray(x_adv), dtype=torch.float32).reshape(x.shape)
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    success = pred == target if target is not None else pred != y
    l0 = ((x_adv - x).abs().amax(1) > L0_TOL).flatten(1).sum(1)
    return {
        "success_rate": round(float(success.float().mean()), 4),
        "n_success": int(success.sum()),
        "n_success_within_l0": int((success & (l0 <= pixels)).sum()),
        "max_l0_pixels": int(l0.max()),
        "in_box": bool(x_adv.min() >= 0 and x_adv.max() <= 1),
    }


ADVEX_VARIANTS = {
    "advex": {},  # defaults: the paper's DE (rand1, F = 0.5) for 1 pixel, best1 for more; fp32
    "advex-rand1": {"strategy": "rand1"},  # the paper's mutation whatever the pixels
    "advex-best1": {"strategy": "best1"},  # the mutation the peers (SciPy's default) use
    "advex-bf16": {"precision": "bf16"},  # opt-in bf16 scoring, successes re-checked in fp32
    "advex-full": {"incremental": False},  # defaults, full forward passes only (no incremental scoring)
}


def run_advex(model, counter, x, y, target, a, **variant) -> tuple[dict, torch.Tensor]:
    from advex.attacks import OnePixel

    attack = OnePixel(pixels=a.pixels, population=a.population, iterations=a.iterations, seed=a.seed, **variant)
    counter.images = 0
    t0 = time.perf_counter()
    r = attack(model, x, y, target=target)
    t = time.perf_counter() - t0
    counted = counter.images
    q = r.extra["queries"]
    row = {
        "time_s": round(t, 3),
        "reported_time_s": round(float(r.time_s), 3),
        "mean_queries": round(float(q.float().mean()), 1),
        "mean_scored": round(float(r.extra["scored"].float().mean()), 1),  # repeats take their first's fitness
        "max_queries": int(q.max()),
        "counted_queries_per_image": round(counted / len(x), 1),
        "reported_success_rate": round(float(r.success.float().mean()), 4),
        "population_real": a.population,
        "iterations": a.iterations,
        "attack": repr(attack),
    }
    return row, r.x_adv.detach().cpu()


def run_torchattacks(model, counter, x, y, target, a) -> tuple[dict, torch.Tensor]:
    import torchattacks

    attack = torchattacks.OnePixel(
        model, pixels=a.pixels, steps=a.iterations, popsize=a.population, inf_batch=INF_BATCH
    )
    if target is not None:
        assert "targeted" in attack.supported_mode
        attack.set_mode_targeted_by_function(lambda _images, labels: (labels + 1) % 10, quiet=True)
    np.random.seed(a.seed)  # its DE draws from NumPy's global generator (seed=None)
    counter.images = 0
    t0 = time.perf_counter()
    x_adv = attack(x, y)
    t = time.perf_counter() - t0
    d = a.pixels * (2 + x.shape[1])
    row = {
        "time_s": round(t, 3),
        "mean_queries": round(counter.images / len(x), 1),
        "popsize_arg": a.population,
        "population_real": max(5, max(1, int(a.population / d)) * d),
        "iterations": a.iterations,
        "de": "SciPy DE copy, best1bin, F~U[0.5,1) per generation, CR=1, init random, stop on success",
    }
    return row, x_adv.detach().cpu()


def run_art(model, counter, x, y, target, a) -> tuple[dict, torch.Tensor]:
    from art.attacks.evasion import PixelAttack
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    attack = PixelAttack(clf, th=a.pixels, es=1, max_iter=a.iterations, targeted=target is not None, verbose=False)
    xn = x.numpy()
    labels = (target if target is not None else y).numpy()
    np.random.seed(a.seed)  # its DE draws from NumPy's global generator (seed=None)
    counter.images = 0
    t0 = time.perf_counter()
    x_adv = attack.generate(xn, labels)
    t = time.perf_counter() - t0
    row = {
        "time_s": round(t, 3),
        "mean_queries": round(counter.images / len(x), 1),
        "population_real": de_population(a.pixels, x.shape[1]),
        "iterations": a.iterations,
        "de": "SciPy DE copy, best1bin, F~U[0.5,1) per generation, CR=1, init latin hypercube, "
        "colours quantised to 0..255, stop on success",
    }
    return row, torch.from_numpy(np.asarray(x_adv, dtype=np.float32))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        default="cifar10-small",
        help="zoo name (cifar10-small, cifar10-small-pgd, mnist-small) or FILE.py (benchmarks/cifar10_cnn7.py)",
    )
    p.add_argument("--weights", type=Path, help="the model's weights (a FILE.py model: e.g. a trained cnn7)")
    p.add_argument("--n", type=int, default=20, help="first N correctly classified test images")
    p.add_argument("--pixels", type=int, default=1, choices=(1, 3, 5))
    p.add_argument("--population", type=int, default=400)
    p.add_argument("--iterations", type=int, default=100, help="DE generations")
    p.add_argument("--targeted", action="store_true", help="target (y + 1) %% 10 for every image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-advex", action="store_true")
    p.add_argument(
        "--advex-variants",
        default=",".join(ADVEX_VARIANTS),
        type=lambda v: v.split(","),
        help=f"advex runs, comma-separated (default: {','.join(ADVEX_VARIANTS)})",
    )
    p.add_argument("--skip-torchattacks", action="store_true")
    p.add_argument("--skip-art", action="store_true")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()

    torch.manual_seed(a.seed)
    model = load(a.model, weights=a.weights, device="cpu")
    counter = QueryCounter(model)
    dataset = "mnist" if a.model.startswith("mnist") else "cifar10"
    x_all, y_all = load_dataset(dataset, "test").floats()
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in x_all.split(1000)])
    idx = torch.nonzero(pred == y_all).flatten()[: a.n]
    x, y = x_all[idx].contiguous(), y_all[idx].contiguous()
    target = (y + 1) % 10 if a.targeted else None
    with torch.no_grad():  # warm-up of the model at the population's batch size
        model(x[:1].expand(a.population, -1, -1, -1).contiguous())

    res: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "loadavg_start": [round(v, 2) for v in os.getloadavg()],
            "numpy": np.__version__,
            "scipy": pkg_version("scipy"),
            "advex": pkg_version("advex"),
            "torchattacks": pkg_version("torchattacks"),
            "adversarial-robustness-toolbox": pkg_version("adversarial-robustness-toolbox"),
        },
        "settings": {
            "model": a.model,
            "weights": str(a.weights) if a.weights else None,
            "dataset": f"{dataset} test",
            "n": len(x),
            "image_indices": idx.tolist(),
            "pixels": a.pixels,
            "population": a.population,
            "iterations": a.iterations,
            "targeted": a.targeted,
            "target": "(y + 1) % 10" if a.targeted else None,
            "seed": a.seed,
            "inference_batch_peers": INF_BATCH,
            "l0_tol": L0_TOL,
            "clean_acc_first_10000": round(float((pred == y_all).float().mean()), 4),
        },
        "libraries": {},
        "notes": [
            "torchattacks targeted: set_mode_targeted_by_function((y + 1) % 10); ART targeted: PixelAttack("
            "targeted=True) with the targets passed as y to generate(). Both support it.",
            "Both peers attack one image at a time; mean_queries = images forwarded / n (includes the per-generation "
            "success check of the best member, one image each).",
        ],
    }

    runners = [
        (k, a.skip_advex or k not in a.advex_variants, functools.partial(run_advex, **v))
        for k, v in ADVEX_VARIANTS.items()
    ] + [
        ("torchattacks", a.skip_torchattacks, run_torchattacks),
        ("art", a.skip_art, run_art),
    ]
    for name, skip, fn in runners:
        if skip:
            continue
        print(f"running {name} ...", flush=True)
        row, x_adv = fn(model, counter, x, y, target, a)
        row["time_per_image_s"] = round(row["time_s"] / len(x), 3)
        row.update(evaluate(model, x, y, x_adv, target, a.pixels))
        res["libraries"][name] = row

    libs = res["libraries"]
    res["ratios"] = {}
    for ours in [k for k in libs if k.startswith("advex")]:
        for k, v in libs.items():
            if k.startswith("advex"):
                continue
            res["ratios"][f"{k}_time_over_{ours}"] = round(v["time_s"] / libs[ours]["time_s"], 2)
            res["ratios"][f"{k}_queries_over_{ours}"] = round(
                v["mean_queries"] / max(libs[ours]["mean_queries"], 1e-9), 2
            )

    # the 1-minute load average should stay near the 1-2 of this benchmark; more means another job shared the CPUs
    res["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")

    mode = "targeted" if a.targeted else "untargeted"
    print(f"\n{a.model}, {len(x)} images, {a.pixels} pixel(s), {mode}, {a.iterations} generations")
    print(f"{'library':<14}{'pop':>5}{'time s':>10}{'s/image':>10}{'success':>9}{'queries':>10}{'max L0':>8}")
    for k, v in libs.items():
        print(
            f"{k:<14}{v['population_real']:>5}{v['time_s']:>10.2f}{v['time_per_image_s']:>10.3f}"
            f"{v['success_rate']:>9.2f}{v['mean_queries']:>10.0f}{v['max_l0_pixels']:>8}"
        )
    for k, v in res.get("ratios", {}).items():
        print(f"{k}: {v}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
