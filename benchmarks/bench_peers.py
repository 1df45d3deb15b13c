"""advex against torchattacks, Foolbox and ART on the same model and inputs (issue 4).

Run with the peers' virtual environment (never a dependency of advex):

    python3 -m venv /work/peers-venv && . /work/peers-venv/bin/activate
    pip install torch==2.13.0 && pip install -e . && pip install --no-deps torchattacks
    pip install foolbox adversarial-robustness-toolbox
    python benchmarks/bench_peers.py            # writes benchmarks/results/peers.json

Model: the zoo's cifar10-small-pgd; inputs: the first 1000 CIFAR-10 test images; eps 8/255.
Robust accuracy = correctly classified and not broken. Each timing is one run, same process,
same threads, one after the other.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from advex.attacks import APGD, CW, PGD
from advex.data.datasets import load_dataset
from advex.models import load

OUT = Path(__file__).resolve().parent / "results" / "peers.json"
EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 20


def timed(fn, warmup=None):
    """Wall time of ``fn()``, after one small warm-up call (``warmup``) of the same attack."""
    if warmup is not None:
        warmup()
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 2)


def robust_of(model, x_adv, x, y):
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        adv = model(torch.as_tensor(x_adv, dtype=torch.float32)).argmax(1) == y
    return round(float((clean & adv).float().mean()), 4)


def main() -> None:
    torch.manual_seed(0)
    model = load("cifar10-small-pgd", device="cpu")
    x, y = load_dataset("cifar10", "test").subset(1000).floats()
    res: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "model": "cifar10-small-pgd",
        "n": len(x),
        "eps": EPS,
    }
    with torch.no_grad():
        res["clean_acc"] = round(float((model(x).argmax(1) == y).float().mean()), 4)

    # --- the fp32 floor: one forward+backward of the model on the images PGD works on (the
    # correctly classified ones; the others are already adversarial) vs one PGD step
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    xc, yc = x[ok], y[ok]

    def fwd_bwd():
        d = torch.zeros_like(xc, requires_grad=True)
        loss = torch.nn.functional.cross_entropy(model(xc + d), yc, reduction="sum")
        torch.autograd.grad(loss, d)

    for _ in range(3):
        fwd_bwd()
    reps = 20
    pgd20 = PGD(eps=EPS, steps=reps, step_size=ALPHA, early_stop=False)
    pgd40 = PGD(eps=EPS, steps=2 * reps, step_size=ALPHA / 2, early_stop=False)
    pgd20(model, xc[:8], yc[:8])
    rows = []
    for _ in range(3):  # interleaved; per-step = whole call / steps; marginal = (PGD-40 - PGD-20) / 20
        t_floor = timed(lambda: [fwd_bwd() for _ in range(reps)])[1]
        t20 = timed(lambda: pgd20(model, xc, yc))[1]
        t40 = timed(lambda: pgd40(model, xc, yc))[1]
        rows.append((t_floor / reps, t20 / reps, (t40 - t20) / reps))
    med = [sorted(r[k] for r in rows)[1] for k in range(3)]
    res["pgd_step_vs_floor"] = {
        "floor_s_per_step": round(med[0], 4),
        "pgd20_s_per_step": round(med[1], 4),
        "ratio_pgd20": round(med[1] / med[0], 3),
        "marginal_s_per_step": round(med[2], 4),
        "ratio_marginal": round(med[2] / med[0], 3),
        "runs": [[round(v, 4) for v in r] for r in rows],
    }
    print(res["pgd_step_vs_floor"])

    # --- the same on the ImageNet default (EfficientNet-Lite0, 16 photos at 224x224), where
    # the model dominates: PGD-10 per step vs the floor, and torchattacks' PGD on the batch
    from advex.data import sample_photos

    big = load("efficientnet-lite0", device="cpu")
    photos = torch.stack(
        [
            torch.nn.functional.interpolate(p.pixels[None], size=(224, 224), mode="bilinear", antialias=True)[0]
            for p in sample_photos()
        ]
    )
    xb = torch.cat([photos, photos.flip(-1), photos.flip(-2), photos[:1]])  # 16 images
    with torch.no_grad():
        yb = big(xb).argmax(1)

    def fwd_bwd_big():
        d = torch.zeros_like(xb, requires_grad=True)
        torch.autograd.grad(torch.nn.functional.cross_entropy(big(xb + d), yb, reduction="sum"), d)

    import torchattacks

    fwd_bwd_big()
    ta = torchattacks.PGD(big, eps=1 / 255, alpha=0.25 / 255, steps=10, random_start=True)
    ta(xb[:2], yb[:2])
    PGD(eps=1 / 255, steps=1)(big, xb[:2], yb[:2])
    floor, ours, theirs = [], [], []
    for _ in range(5):  # interleaved repetitions; the median of each is reported (CPU timings are noisy)
        floor.append(timed(lambda: [fwd_bwd_big() for _ in range(10)])[1])
        ours.append(timed(lambda: PGD(eps=1 / 255, steps=10, early_stop=False)(big, xb, yb))[1])
        theirs.append(timed(lambda: ta(xb, yb))[1])
    t_floor_b, t_pgd_b, t_ta = (sorted(v)[len(v) // 2] for v in (floor, ours, theirs))
    row = {
        "floor_s_per_step": round(t_floor_b / 10, 4),
        "pgd_s_per_step": round(t_pgd_b / 10, 4),
        "ratio": round(t_pgd_b / t_floor_b, 3),
        "batch": 16,
        "torchattacks_s_per_step": round(t_ta / 10, 4),
        "advex_speedup_vs_torchattacks": round(t_ta / t_pgd_b, 2),
        "runs_s": [floor, ours, theirs],
    }
    res["pgd_step_vs_floor_efficientnet"] = row
    print("EfficientNet", row)

    # --- PGD
    pgd = {}
    w8 = (x[:8], y[:8])
    r, t = timed(
        lambda: PGD(eps=EPS, steps=STEPS, step_size=ALPHA, early_stop=False)(model, x, y),
        lambda: PGD(eps=EPS, steps=2)(model, *w8),
    )
    pgd["advex"] = {"robust_acc": robust_of(model, r.x_adv, x, y), "time_s": t}
    r, t = timed(lambda: PGD(eps=EPS, steps=STEPS, step_size=ALPHA)(model, x, y))
    pgd["advex (early stop)"] = {"robust_acc": robust_of(model, r.x_adv, x, y), "time_s": t}
    try:
        import torchattacks

        atk = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        xa, t = timed(lambda: atk(x, y), lambda: atk(*w8))
        pgd["torchattacks"] = {"robust_acc": robust_of(model, xa, x, y), "time_s": t}
    except Exception as e:  # noqa: BLE001
        pgd["torchattacks"] = {"error": repr(e)[:200]}
    try:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        atk = fb.attacks.LinfPGD(abs_stepsize=ALPHA, steps=STEPS, random_start=True)
        (_, xa, _), t = timed(lambda: atk(fmodel, x, y, epsilons=EPS), lambda: atk(fmodel, *w8, epsilons=EPS))
        pgd["foolbox"] = {"robust_acc": robust_of(model, xa, x, y), "time_s": t}
    except Exception as e:  # noqa: BLE001
        pgd["foolbox"] = {"error": repr(e)[:200]}
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(
            model=model,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=(3, 32, 32),
            nb_classes=10,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        atk = ProjectedGradientDescent(
            clf, norm=np.inf, eps=EPS, eps_step=ALPHA, max_iter=STEPS, num_random_init=1, batch_size=1000, verbose=False
        )
        xa, t = timed(lambda: atk.generate(x.numpy()), lambda: atk.generate(w8[0].numpy()))
        pgd["art"] = {"robust_acc": robust_of(model, xa, x, y), "time_s": t}
    except Exception as e:  # noqa: BLE001
        pgd["art"] = {"error": repr(e)[:200]}
    res["pgd_linf_20"] = pgd
    print("PGD", pgd)

    # --- APGD-CE, 100 steps
    apgd = {}
    r, t = timed(lambda: APGD(eps=EPS, steps=100, loss="ce")(model, x, y), lambda: APGD(eps=EPS, steps=5)(model, *w8))
    apgd["advex"] = {"robust_acc": robust_of(model, r.x_adv, x, y), "time_s": t}
    try:
        import torchattacks

        atk = torchattacks.APGD(model, norm="Linf", eps=EPS, steps=100, n_restarts=1, loss="ce", seed=0)
        xa, t = timed(lambda: atk(x, y), lambda: atk(*w8))
        apgd["torchattacks"] = {"robust_acc": robust_of(model, xa, x, y), "time_s": t}
    except Exception as e:  # noqa: BLE001
        apgd["torchattacks"] = {"error": repr(e)[:200]}
    try:
        from art.attacks.evasion import AutoProjectedGradientDescent

        atk = AutoProjectedGradientDescent(
            clf,
            norm=np.inf,
            eps=EPS,
            eps_step=2 * EPS,
            max_iter=100,
            nb_random_init=1,
            batch_size=1000,
            loss_type="cross_entropy",
            verbose=False,
        )
        xa, t = timed(
            lambda: atk.generate(x.numpy(), y=y.numpy()), lambda: atk.generate(w8[0].numpy(), y=w8[1].numpy())
        )
        apgd["art"] = {"robust_acc": robust_of(model, xa, x, y), "time_s": t}
    except Exception as e:  # noqa: BLE001
        apgd["art"] = {"error": repr(e)[:200]}
    res["apgd_ce_100"] = apgd
    print("APGD", apgd)

    # --- C&W L2, c = 1, 100 steps, lr 0.01 (torchattacks' settings; one c, no search)
    cw = {}
    xs, ys = x[:500], y[:500]

    def cw_stats(xa, t):
        xa = torch.as_tensor(xa, dtype=torch.float32)
        with torch.no_grad():
            ok = (model(xs).argmax(1) == ys) & (model(xa).argmax(1) != ys)
        l2 = (xa - xs).flatten(1).norm(dim=1)[ok]
        return {
            "success": round(float(ok.float().mean()), 4),
            "median_l2": round(float(l2.median()), 4) if ok.any() else None,
            "time_s": t,
        }

    r, t = timed(lambda: CW(c=1.0, steps=100, lr=0.01)(model, xs, ys), lambda: CW(steps=5)(model, *w8))
    cw["advex"] = cw_stats(r.x_adv, t)
    r, t = timed(lambda: CW(c=1.0, steps=100, lr=0.01, abort_early=True)(model, xs, ys))
    cw["advex (abort_early)"] = cw_stats(r.x_adv, t)
    try:
        import torchattacks

        atk = torchattacks.CW(model, c=1, kappa=0, steps=100, lr=0.01)
        xa, t = timed(lambda: atk(xs, ys), lambda: atk(*w8))
        cw["torchattacks"] = cw_stats(xa, t)
    except Exception as e:  # noqa: BLE001
        cw["torchattacks"] = {"error": repr(e)[:200]}
    res["cw_l2_c1_100"] = cw
    print("CW", cw)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
