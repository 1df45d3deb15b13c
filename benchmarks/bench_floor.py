"""Each gradient attack against its floor: the forward+backward passes it must make (issue 19).

    python benchmarks/bench_floor.py                       # writes benchmarks/results/floor.json
    /work/peers-venv/bin/python benchmarks/bench_floor.py  # adds torchattacks' PGD beside advex's

The floor of an attack that spends ``E`` gradient evaluations (forward + backward with respect to
the input, the batch it runs on) is ``E * t_fb``, with ``t_fb`` the time of one such pass of the
same batch (10 in a row, divided by 10), measured again right before each timed call of the attack,
in the memory layout advex's attacks run in (channels-last where `Classifier.prefers_channels_last`:
EfficientNet-Lite0 here; the contiguous floor, torchattacks' layout, is recorded beside it).
``ratio`` = the median over ``--reps`` calls of attack wall time / floor: 1.05 means 5% of
bookkeeping (clean and final predictions, projections, the optimiser) on top of the passes.
``ratio_fwd`` counts the clean and final predictions (no-grad forward passes, ``t_f`` each) as part
of the floor where the method needs them: none where they come from the attack's own passes (C&W's
clean prediction is its first step's pass, its final one the pass that chose each point; FGSM's
clean one its step's). Attacks whose first step is at the clean images (`Attack.starts_at_clean`)
are also timed, alternately, with a clean pass of their own (as before that reuse):
``clean_pass_reused_speedup``. Early stopping is off, so every image makes every step.
Square's floor is its queries (forward passes, ``t_f`` each, the first included: mean per image).
Then PGD-10 on the opt-in fast twins (`Classifier.fast`: bf16 autocast, channels_last, and with
``--compile`` torch.compile), and torchattacks' PGD-10 where installed, each against advex's fp32
PGD-10 on the same batch in alternating calls (median of the per-pair ratios).
Models: the zoo's mnist-small and cifar10-small (the test images among the first 256 and
340 that they classify correctly: ~250 each) and efficientnet-lite0
(batch 16 of the five sample photos at 224 x 224, flipped and cropped).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from advex.attacks import APGD, CW, FGSM, PGD, Square
from advex.data.datasets import load_dataset
from advex.data.images import sample_photos
from advex.models import load

OUT = Path(__file__).resolve().parent / "results" / "floor.json"


def photos_batch(n: int, size: int = 224) -> torch.Tensor:
    """``n`` crops of the five sample photos at size x size (deterministic)."""
    ims = [p.pixels for p in sample_photos()]
    out = []
    for i in range(n):
        im = ims[i % len(ims)]
        if im.shape[0] == 1:
            im = im.expand(3, -1, -1)
        h, w = im.shape[1:]
        s = min(h, w) * (0.8 + 0.2 * ((i // len(ims)) % 2))
        top, left = int((h - s) / 2), int((w - s) / 2)
        crop = im[:, top : top + int(s), left : left + int(s)][None]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        out.append(crop.flip(-1) if (i // len(ims)) % 3 == 1 else crop)
    return torch.stack(out).clamp(0, 1)


def median_time(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def pass_times(model, x, y, reps: int) -> tuple[float, float]:
    """(forward+backward w.r.t. the input, no-grad forward) of batch x: the median over
    ``reps`` runs of 10 passes in a row, divided by 10 (an attack makes its passes in a row).
    In the memory layout x has (attacks run channels-last where the model prefers it)."""

    def fb():
        for _ in range(10):
            xa = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)

    def f():
        for _ in range(10):
            with torch.no_grad():
                model(x)

    return median_time(fb, reps) / 10, median_time(f, reps) / 10


def attacks(eps: float) -> dict:
    """label -> (attack, forward passes its method needs beyond its gradient evaluations)."""
    return {
        "PGD-10": (PGD(eps=eps, steps=10, early_stop=False), 2),
        "PGD-10 l2": (PGD(eps=eps * 40, steps=10, norm="l2", early_stop=False), 2),
        "FGSM": (FGSM(eps=eps), 1),  # the clean prediction is its step's pass
        "APGD-CE-10": (APGD(eps=eps, steps=10, early_stop=False), 2),
        "CW-50": (CW(c=1.0, steps=50), 0),  # clean from its first step, final from its passes
        "CW-10x5": (CW(c=1.0, steps=10, search_steps=5), 0),
        "Square-100": (Square(eps=eps, queries=100), 1),  # forward passes only: its floor is in t_f
    }


def run_model(name: str, x, y, eps: float, reps: int, peers: bool, compile_too: bool, only=None) -> dict:
    model = load(name, device="cpu").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():  # only images the model gets right: every image is attacked
        keep = model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    # the floor in the layout advex's attacks run their passes in (channels-last where the model
    # prefers it), and the contiguous one a plain loop (and torchattacks) runs
    cl = model.prefers_channels_last(x)
    xl = x.contiguous(memory_format=torch.channels_last) if cl else x
    t_fb, t_f = pass_times(model, xl, y, reps)
    t_fb_c, t_f_c = pass_times(model, x, y, reps) if cl else (t_fb, t_f)
    row: dict = {
        "model": name,
        "batch": len(x),
        "channels_last": cl,
        "t_fb_s": round(t_fb, 4),
        "t_f_s": round(t_f, 4),
        "t_fb_contiguous_s": round(t_fb_c, 4),
        "t_f_contiguous_s": round(t_f_c, 4),
        "attacks": {},
    }
    print(
        f"{name}: batch {len(x)}, {'channels-last' if cl else 'contiguous'} forward+backward {t_fb * 1e3:.1f} ms, "
        f"forward {t_f * 1e3:.1f} ms (contiguous {t_fb_c * 1e3:.1f} / {t_f_c * 1e3:.1f} ms)",
        flush=True,
    )
    for label, (atk, fwd) in attacks(eps).items():
        if only and label not in only:
            continue
        res = atk(model, x, y)  # warm-up, and the evaluations it spends
        square = isinstance(atk, Square)  # its queries are forward passes (the first one included)
        evals = float((res.extra["queries"] if square else res.grad_evals).float().mean())
        # where the first step is at the clean images, the same attack with a clean pass of its
        # own (as before the reuse) alternates with it: the reuse's speed-up
        plain = None
        if atk.starts_at_clean():
            plain = copy.copy(atk)
            plain.starts_at_clean = lambda: False
            plain(model, x, y)
        times, ratios, ratios_fwd, reuse = [], [], [], []
        for _ in range(reps):  # the floor measured again right before each timed call: drift cancels
            tfb, tf = pass_times(model, xl, y, 1)
            t0 = time.perf_counter()
            atk(model, x, y)
            t = time.perf_counter() - t0
            floor = evals * (tf if square else tfb)
            times.append(t)
            ratios.append(t / floor)
            ratios_fwd.append(t / (floor + fwd * tf))
            if plain is not None:
                t0 = time.perf_counter()
                plain(model, x, y)
                reuse.append((time.perf_counter() - t0) / t)
        t = statistics.median(times)
        r = {
            "time_s": round(t, 4),
            "evals_per_image": evals,
            "ratio": round(statistics.median(ratios), 3),
            "ratio_fwd": round(statistics.median(ratios_fwd), 3),
            "ratios": [round(v, 3) for v in ratios],
            "success": round(float(res.success.float().mean()), 4),
        }
        if reuse:
            r["clean_pass_reused_speedup"] = round(statistics.median(reuse), 3)
            r["clean_pass_reused_speedups"] = [round(v, 3) for v in reuse]
        row["attacks"][label] = r
        print(
            f"  {label:12s} {t:7.3f} s  evals {evals:5.1f}  x floor {r['ratio']:.3f}  "
            f"(with {fwd} forward: {r['ratio_fwd']:.3f})  success {r['success']:.3f}"
            + (f"  reused clean pass {r['clean_pass_reused_speedup']:.3f}x" if reuse else ""),
            flush=True,
        )
    if hasattr(model, "fast") and not only:  # the opt-in fast path on this machine
        row["fast_pgd10"] = {}
        variants = {
            "bf16": dict(precision="bf16"),
            "channels_last": dict(precision="fp32", channels_last=True),
            "bf16+channels_last": dict(precision="bf16", channels_last=True),
        }
        if compile_too:
            variants["compile"] = dict(precision="fp32", compile=True)
        pgd = PGD(eps=eps, steps=10, early_stop=False)
        for label, kw in variants.items():
            twin = load(name, device="cpu").eval().fast(**kw)
            res = pgd(twin, x, y)  # warm-up (and compiling)
            speed, times = [], []
            for _ in range(reps):  # fp32 and the twin alternately, one call each
                t0 = time.perf_counter()
                pgd(model, x, y)
                t1 = time.perf_counter()
                pgd(twin, x, y)
                times.append(time.perf_counter() - t1)
                speed.append((t1 - t0) / times[-1])
            row["fast_pgd10"][label] = {
                "time_s": round(statistics.median(times), 4),
                "speedup_vs_fp32": round(statistics.median(speed), 3),
                "success": round(float(res.success.float().mean()), 4),
            }
            print(
                f"  PGD-10 fast {label:20s} {statistics.median(times):7.3f} s  {statistics.median(speed):.2f}x fp32  "
                f"success {float(res.success.float().mean()):.3f}",
                flush=True,
            )
    if peers and not only:
        try:
            import torchattacks
        except ImportError:
            row["torchattacks"] = "not installed"
        else:
            ta = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)
            ours = PGD(eps=eps, steps=10, early_stop=False)
            ta(x, y)
            speed, times = [], []
            for _ in range(reps):  # advex and torchattacks alternately, one call each
                t0 = time.perf_counter()
                ours(model, x, y)
                t1 = time.perf_counter()
                ta(x, y)
                times.append(time.perf_counter() - t1)
                speed.append(times[-1] / (t1 - t0))
            t = statistics.median(times)
            row["torchattacks_pgd10"] = {
                "time_s": round(t, 4),
                "ratio": round(t / (10 * t_fb_c), 3),  # of the contiguous floor: its layout
                "advex_speedup": round(statistics.median(speed), 3),
                "advex_speedups": [round(v, 3) for v in speed],
            }
            print(
                f"  torchattacks PGD-10 {t:7.3f} s  x contiguous floor {t / (10 * t_fb_c):.3f}  "
                f"advex {statistics.median(speed):.2f}x as fast (alternating calls)",
                flush=True,
            )
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist-small,cifar10-small,efficientnet-lite0")
    ap.add_argument("--reps", type=int, default=9, help="timed calls per attack (a third on EfficientNet)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--attacks", default="", help="only these attacks (comma-separated labels)")
    ap.add_argument("--compile", action="store_true", help="also time a torch.compile'd twin (minutes of compiling)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    only = [a for a in args.attacks.split(",") if a]
    rows = []
    for name in args.models.split(","):
        if name == "efficientnet-lite0":
            x = photos_batch(16)
            y = load(name, device="cpu").eval()(x).argmax(1).detach()
            rows.append(run_model(name, x, y, 2 / 255, max(2, args.reps // 3), True, args.compile, only))
        else:
            ds = "mnist" if name.startswith("mnist") else "cifar10"
            x, y = load_dataset(ds, "test").subset(256 if ds == "mnist" else 340).floats()
            rows.append(run_model(name, x, y, 0.1 if ds == "mnist" else 8 / 255, args.reps, True, args.compile, only))
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
