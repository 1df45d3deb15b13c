"""What only a GPU can show, in one command of under 10 minutes on one CUDA GPU (e.g. an H100).

    python benchmarks/bench_gpu.py                           # every section, results/gpu.json
    python benchmarks/bench_gpu.py --only pgd,bounds         # a subset
    python benchmarks/bench_gpu.py --tiny --device cpu       # tiny sizes: proves it runs, in seconds

Sections (each in its own try/except: one that fails records {"error": ...} and the others run):

- ``pgd``: PGD L-inf, eps 4/255, 10 steps of 1/255, random start, no early stop, on
  EfficientNet-Lite0 at batch 256 of 224x224 views of the five sample photos (random crops
  and flips); labels are the model's clean predictions. advex fp32, advex's fast path (the
  same PGD on ``model.fast(precision="bf16", channels_last=True, compile=True)``; compile on
  CUDA only unless ``--compile on``), torchattacks' PGD at the same settings
  (if installed; a benchmark peer, never a dependency), and the floor (10 forward+backward
  passes of the model on the batch). Goal: the fast path 3x torchattacks at equal success.
- ``onepixel``: the one-pixel attack at the paper's budget (population 400, 100 generations:
  up to 40,400 queries a photo) on the five photos at the network's input; fp32, bf16, and
  fp32 at a larger scoring batch than the default.
- ``patch``: adversarial patch training (EOT + Adam) on EfficientNet-Lite0, target ostrich:
  images/s at the default batch of 16 and at 128.
- ``bounds``: ``certify(..., attack=False)`` with IBP and CROWN at batch 1000 on
  mnist-small-ibp-0.1 (MNIST, eps 0.1) and cifar10-small-ibp-8 (CIFAR-10, eps 8/255).
- ``smoothing``: ``Smooth.certify`` (n = 10,000, n0 = 100) on the first CIFAR-10 test images
  with cifar10-small-gaussian-0.25: noise samples per second, at the default batch and a large one.

Every timed call follows one warm-up call of the same work (the same shapes, so nothing is
compiled or autotuned inside the timing); on CUDA the clock is read after
``torch.cuda.synchronize()``. Peak GPU memory is recorded per timed call. Results are written
(atomically) after every section; a run of some sections keeps the others' entries.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
SECTIONS = ("pgd", "onepixel", "patch", "bounds", "smoothing")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")
IMAGENET = "efficientnet-lite0"

# Full sizes (one GPU, well under 10 minutes in all) and the tiny ones (CPU, seconds).
FULL = {
    "pgd": {"batch": 256, "steps": 10, "image": 224},
    "onepixel": {"population": 400, "iterations": 100, "photos": 5, "big_batch": 2048},
    "patch": {"steps": 30, "batch_sizes": [16, 128], "size": 0.1},
    "bounds": {"n": 1000, "batch": 1000},
    "smoothing": {"images": 10, "n": 10_000, "n0": 100, "big_batch": 16_384},
}
TINY = {
    "pgd": {"batch": 4, "steps": 2, "image": 64},
    "onepixel": {"population": 10, "iterations": 2, "photos": 1, "big_batch": 64},
    "patch": {"steps": 2, "batch_sizes": [2], "size": 0.1},
    "bounds": {"n": 8, "batch": 8},
    "smoothing": {"images": 2, "n": 100, "n0": 10, "big_batch": 64},
}
PGD_EPS, PGD_STEP = 4 / 255, 1 / 255
GOAL_SPEEDUP = 3.0
EQUAL_SUCCESS = 0.01  # "equal success": within one percentage point
BOUND_MODELS = {"mnist-small-ibp-0.1": ("mnist", 0.1), "cifar10-small-ibp-8": ("cifar10", 8 / 255)}
SMOOTH_MODEL, SMOOTH_SIGMA = "cifar10-small-gaussian-0.25", 0.25


# ---------------------------------------------------------------------------- shared helpers
class Bench:
    """The run's settings, its device, and the models it has loaded (each loaded once)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.sizes = TINY if args.tiny else FULL
        self._models: dict[str, Any] = {}

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def model(self, name: str):
        if name not in self._models:
            from advex.models import load

            self._models[name] = load(name, device=self.device)
        return self._models[name]

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], Any], warmup: Callable[[], Any] | None = None) -> dict:
        """One warm-up call (``warmup``, default ``fn`` itself), then ``--repeats`` timed calls of
        ``fn``; the clock is read after a device synchronize. Returns the last call's value as
        ``value``, the median time as ``time_s``, every time and the peak GPU memory."""
        self.sync()
        t0 = time.perf_counter()
        (warmup or fn)()
        self.sync()
        warm = time.perf_counter() - t0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        times, value = [], None
        for _ in range(max(1, self.args.repeats)):
            self.sync()
            t0 = time.perf_counter()
            value = fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        out = {"value": value, "time_s": statistics.median(times), "warmup_s": round(warm, 4)}
        if len(times) > 1:
            out["times_s"] = [round(t, 4) for t in times]
        if self.cuda:
            out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return out


def stats(t: dict, images: int, **extra: Any) -> dict:
    """A timed call's row: seconds, images/s and what else the section measured."""
    row = {"time_s": round(t["time_s"], 4), "images_per_s": round(images / t["time_s"], 2), **extra}
    row.update({k: v for k, v in t.items() if k not in ("value", "time_s")})
    return row


def rate(mask: torch.Tensor) -> float:
    return round(float(mask.float().mean()), 4)


def machine(device: torch.device) -> dict:
    """This machine, the software and the device, for the JSON."""
    import advex

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "advex": getattr(advex, "__version__", None),
        "python": platform.python_version(),
        "platform": f"{platform.machine()} {platform.system()}",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=HERE, capture_output=True, text=True, timeout=10)
        info["git_commit"] = head.stdout.strip() or None
        info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=torch.cuda.get_device_name(device),
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


# ---------------------------------------------------------------------------- inputs
def square(pixels: torch.Tensor, side: int) -> torch.Tensor:
    """The centred square of a (C, H, W) photo resized (antialiased) to ``side`` x ``side``."""
    _, h, w = pixels.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = pixels[None, :, top : top + s, left : left + s]
    return F.interpolate(crop, size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def photo_batch(n: int, side: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """``n`` (side x side) views of the five sample photos: each photo at 8/7 of ``side``, then a
    random ``side`` crop and a random horizontal flip (seeded), quantised to 8 bits."""
    from advex.data import quantize, sample_photos

    photos = sample_photos(PHOTOS)
    big = max(side + 1, round(side * 8 / 7))
    bases = torch.stack([square(p.pixels, big) for p in photos])
    g = torch.Generator().manual_seed(seed)
    src = torch.arange(n) % len(photos)
    oy = torch.randint(0, big - side + 1, (n,), generator=g)
    ox = torch.randint(0, big - side + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.empty(n, 3, side, side)
    for i in range(n):  # building the inputs, once; not part of any timing
        v = bases[src[i], :, oy[i] : oy[i] + side, ox[i] : ox[i] + side]
        out[i] = v.flip(-1) if flip[i] else v
    return quantize(out), [photos[int(s)].name for s in src]


# ---------------------------------------------------------------------------- sections
def fast_options(args: argparse.Namespace, device: torch.device) -> tuple[dict, dict]:
    """The options of the fast twin (``Classifier.fast``) this run uses, and notes on the ones
    left out and why: bf16 and channels_last always; compile on CUDA (``--compile auto``)."""
    kw: dict[str, Any] = {"precision": "bf16", "channels_last": True}
    notes: dict[str, str] = {}
    if args.compile == "off" or (args.compile == "auto" and device.type != "cuda"):
        notes["compile"] = f"left off (--compile {args.compile} on {device.type})"
    else:
        kw["compile"] = True
    return kw, notes


def section_pgd(b: Bench) -> dict:
    from advex.attacks import PGD
    from advex.data import quantize

    s = b.sizes["pgd"]
    n, steps, side = s["batch"], s["steps"], s["image"]
    model = b.model(IMAGENET)
    x_cpu, names = photo_batch(n, side)
    x = x_cpu.to(b.device)
    with torch.no_grad():
        y = model(x).argmax(1)
    out: dict[str, Any] = {
        "model": IMAGENET,
        "batch": n,
        "image_size": [side, side],
        "network_input": list(model.input_size) if model.input_size else None,
        "photos": list(PHOTOS),
        "eps": PGD_EPS,
        "eps_255": 4,
        "step_size": PGD_STEP,
        "steps": steps,
        "random_start": True,
        "labels": "the model's clean predictions",
        "distinct_clean_predictions": int(y.unique().numel()),
    }

    def success(x_adv) -> dict:
        xa = torch.as_tensor(x_adv).to(b.device, torch.float32)
        with torch.no_grad():
            raw = model(xa).argmax(1) != y
            q8 = model(quantize(xa)).argmax(1) != y
            linf = (xa - x).flatten(1).abs().amax(1).max()
        return {"success_rate": rate(raw), "success_rate_8bit": rate(q8), "max_linf_255": round(float(linf) * 255, 3)}

    # the floor: `steps` forward+backward passes of the model on the batch, fp32
    def floor():
        for _ in range(steps):
            d = torch.zeros_like(x, requires_grad=True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(x + d), y, reduction="sum")
                torch.autograd.grad(loss, d)

    t = b.timed(floor)
    out["floor_fwd_bwd"] = stats(t, n, what=f"{steps} forward+backward passes of the model on the batch, fp32")

    common = dict(eps=PGD_EPS, steps=steps, step_size=PGD_STEP, random_start=True, early_stop=False, seed=0)
    pgd32 = PGD(**common)
    t = b.timed(lambda: pgd32(model, x, y))
    out["advex_fp32"] = stats(t, n, attack=repr(pgd32), options={}, **success(t["value"].x_adv))
    out["advex_fp32"]["advex_success_rate"] = round(t["value"].success_rate, 4)

    kw, notes = fast_options(b.args, b.device)
    out["fast_path_options_used"] = kw
    out["fast_path_options_not_used"] = notes
    try:
        twin = model.fast(**kw)
        t = b.timed(lambda: pgd32(twin, x, y))
        desc = f"{pgd32!r} on model.fast(**options)"
        out["advex_fast"] = stats(t, n, attack=desc, options=kw, **success(t["value"].x_adv))
        out["advex_fast"]["advex_success_rate"] = round(t["value"].success_rate, 4)
    except Exception as e:  # noqa: BLE001 - recorded; the peer still runs
        out["advex_fast"] = {"error": f"{type(e).__name__}: {e}"[:500], "options": kw}

    try:
        import torchattacks
    except ImportError:
        out["torchattacks"] = {"skipped": "torchattacks not installed"}
    else:
        ta = torchattacks.PGD(model, eps=PGD_EPS, alpha=PGD_STEP, steps=steps, random_start=True)
        t = b.timed(lambda: ta(x, y))
        out["torchattacks"] = stats(t, n, version=torchattacks.__version__, **success(t["value"]))

    ta_row, f32, fst = out.get("torchattacks", {}), out["advex_fp32"], out.get("advex_fast", {})
    out["advex_fp32_over_floor"] = round(f32["time_s"] / out["floor_fwd_bwd"]["time_s"], 3)
    if "time_s" in fst:
        out["fast_speedup_over_fp32"] = round(f32["time_s"] / fst["time_s"], 3)
    if "time_s" in ta_row:
        out["torchattacks_over_advex_fp32"] = round(ta_row["time_s"] / f32["time_s"], 3)
        if "time_s" in fst:
            speed = ta_row["time_s"] / fst["time_s"]
            equal = fst["success_rate"] >= ta_row["success_rate"] - EQUAL_SUCCESS
            out["torchattacks_over_advex_fast"] = round(speed, 3)
            out["goal_met"] = bool(speed >= GOAL_SPEEDUP and equal)
    out["goal"] = (
        f"advex's fast path at least {GOAL_SPEEDUP:g}x torchattacks' PGD (time ratio torchattacks / fast) "
        f"at equal success (fast success_rate >= torchattacks' - {EQUAL_SUCCESS})"
    )
    return out


def section_onepixel(b: Bench) -> dict:
    from advex.attacks import OnePixel
    from advex.data import pack, quantize, sample_photos

    s = b.sizes["onepixel"]
    model = b.model(IMAGENET)
    photos = sample_photos(PHOTOS[: s["photos"]])
    canvas, sizes = pack([p.pixels for p in photos])
    x = quantize(model.fit_input(canvas, sizes)).to(b.device)  # each photo at the network's input
    n = x.shape[0]
    out: dict[str, Any] = {
        "model": IMAGENET,
        "photos": [p.name for p in photos],
        "image_size": list(x.shape[-2:]),
        "pixels": 1,
        "population": s["population"],
        "iterations": s["iterations"],
        "budget_queries_per_photo": s["population"] * (s["iterations"] + 1),
    }
    runs = {
        "fp32": {},
        "bf16": {"precision": "bf16"},
        f"fp32_batch{s['big_batch']}": {"batch_size": s["big_batch"]},
    }
    for key, kw in runs.items():
        try:
            atk = OnePixel(pixels=1, population=s["population"], iterations=s["iterations"], **kw)
            warm = OnePixel(pixels=1, population=s["population"], iterations=1, **kw)
            t = b.timed(lambda atk=atk: atk(model, x), warmup=lambda warm=warm: warm(model, x))
            res = t["value"]
            q = res.extra["queries"].float()
            out[key] = stats(
                t,
                n,
                attack=repr(atk),
                options=kw,
                time_per_photo_s=round(t["time_s"] / n, 4),
                queries_per_s=round(float(q.sum()) / t["time_s"], 1),
                success_rate=round(res.success_rate, 4),
                successes=int(res.success.sum()),
                mean_queries=round(float(q.mean()), 1),
                queries=[int(v) for v in q.tolist()],
                labels=[model.class_name(int(i)) for i in res.label],
                labels_adv=[model.class_name(int(i)) for i in res.label_adv],
            )
        except Exception as e:  # noqa: BLE001 - one run failing keeps the others
            out[key] = {"error": f"{type(e).__name__}: {e}"[:500], "options": kw}
    if "time_s" in out["fp32"] and "time_s" in out["bf16"]:
        out["bf16_speedup"] = round(out["fp32"]["time_s"] / out["bf16"]["time_s"], 3)
    return out


def section_patch(b: Bench) -> dict:
    from advex.attacks import Patch
    from advex.data import quantize, sample_photos

    s = b.sizes["patch"]
    model = b.model(IMAGENET)
    x = torch.cat([quantize(model.fit_input(p.pixels[None])) for p in sample_photos(PHOTOS)])
    out: dict[str, Any] = {
        "model": IMAGENET,
        "target": "ostrich",
        "train_photos": list(PHOTOS),
        "image_size": list(x.shape[-2:]),
        "size": s["size"],
        "steps": s["steps"],
        "images_on": "cpu (Patch moves each step's batch to the model's device)",
    }
    for bs in s["batch_sizes"]:
        key = f"batch{bs}"
        try:
            atk = Patch(size=s["size"], steps=s["steps"], batch_size=bs, augment=True, seed=0)
            warm = Patch(size=s["size"], steps=2, batch_size=bs, augment=True, seed=0)
            t = b.timed(lambda atk=atk: atk(model, x, "ostrich"), warmup=lambda warm=warm: warm(model, x, "ostrich"))
            res = t["value"]
            images = s["steps"] * bs
            out[key] = stats(
                t,
                images,
                attack=repr(atk),
                batch_size=bs,
                patched_images=images,
                steps_per_s=round(s["steps"] / t["time_s"], 3),
                patch_pixels=int(res.patch.shape[-1]),
                final_success=res.curve["success"][-1] if res.curve.get("success") else None,
                final_loss=res.curve["loss"][-1] if res.curve.get("loss") else None,
            )
        except Exception as e:  # noqa: BLE001
            out[key] = {"error": f"{type(e).__name__}: {e}"[:500]}
    return out


def section_bounds(b: Bench) -> dict:
    from advex.certify import certify
    from advex.data.datasets import load_dataset

    s = b.sizes["bounds"]
    out: dict[str, Any] = {"n": s["n"], "batch_size": s["batch"], "attack": False}
    for name, (dataset, eps) in BOUND_MODELS.items():
        model = b.model(name)
        x, y = load_dataset(dataset, "test", b.args.data_dir).subset(s["n"]).floats()
        x, y = x.to(b.device), y.to(b.device)
        rows: dict[str, Any] = {"dataset": dataset, "eps": eps, "images": int(x.shape[0])}
        with torch.no_grad():
            t = b.timed(lambda model=model, x=x: model(x).argmax(1))
        rows["forward"] = stats(t, x.shape[0])
        for method in ("ibp", "crown"):
            try:
                t = b.timed(
                    lambda m=method, model=model, x=x, y=y, eps=eps: certify(
                        model, x, y, eps=eps, method=m, attack=False, batch_size=s["batch"]
                    ),
                    warmup=lambda m=method, model=model, x=x, y=y, eps=eps: certify(
                        model, x[:8], y[:8], eps=eps, method=m, attack=False, batch_size=s["batch"]
                    ),
                )
                res = t["value"]
                rows[method] = stats(
                    t,
                    x.shape[0],
                    certified_accuracy=round(res.certified_accuracy, 4),
                    clean_accuracy=round(res.clean_accuracy, 4),
                    cost_in_forward_passes=round(t["time_s"] / rows["forward"]["time_s"], 1),
                )
            except Exception as e:  # noqa: BLE001
                rows[method] = {"error": f"{type(e).__name__}: {e}"[:500]}
        out[name] = rows
    return out


def section_smoothing(b: Bench) -> dict:
    from advex.certify import ABSTAIN, Smooth
    from advex.data.datasets import load_dataset

    s = b.sizes["smoothing"]
    model = b.model(SMOOTH_MODEL)
    x, y = load_dataset("cifar10", "test", b.args.data_dir).subset(s["images"]).floats()
    x = x.to(b.device)
    out: dict[str, Any] = {
        "model": SMOOTH_MODEL,
        "sigma": SMOOTH_SIGMA,
        "images": int(x.shape[0]),
        "n": s["n"],
        "n0": s["n0"],
        "alpha": 0.001,
    }
    for key, bs in (("default_batch", None), (f"batch{s['big_batch']}", s["big_batch"])):
        try:
            smooth = Smooth(model, SMOOTH_SIGMA, batch_size=bs)
            t = b.timed(
                lambda smooth=smooth: smooth.certify(x, n0=s["n0"], n=s["n"], alpha=0.001, seed=0),
                warmup=lambda smooth=smooth: smooth.certify(x[:1], n0=s["n0"], n=s["n"], alpha=0.001, seed=1),
            )
            c = t["value"]
            out[key] = stats(
                t,
                x.shape[0],
                batch_size=bs if bs is not None else default_rows(smooth, x),
                forward_passes=int(c.forward_passes),
                noise_samples_per_s=round(c.forward_passes / t["time_s"], 1),
                abstain_rate=rate(c.label == ABSTAIN),
                smoothed_accuracy=rate(c.label == y),
                certified_at_0_25=rate(c.certified(y, 0.25)),
                mean_radius=round(float(c.radius.mean()), 4),
            )
        except Exception as e:  # noqa: BLE001
            out[key] = {"error": f"{type(e).__name__}: {e}"[:500]}
    return out


def default_rows(smooth, x: torch.Tensor) -> int | str:
    """The noisy inputs per forward pass ``Smooth`` picks by itself (a private method: "default"
    if it is gone)."""
    try:
        return int(smooth._rows(x))
    except Exception:  # noqa: BLE001
        return "default"


RUNNERS: dict[str, Callable[[Bench], dict]] = {
    "pgd": section_pgd,
    "onepixel": section_onepixel,
    "patch": section_patch,
    "bounds": section_bounds,
    "smoothing": section_smoothing,
}


# ---------------------------------------------------------------------------- the command
def write(out: Path, data: dict) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(out)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a few images, few steps): proves it runs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls after the warm-up (median reported)")
    ap.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="compile the fast twin (model.fast(compile=True)): auto = on CUDA only",
    )
    ap.add_argument("--data-dir", default=None, help="MNIST / CIFAR-10 files (default: advex's search)")
    ap.add_argument("--out", default=str(HERE / "results" / "gpu.json"))
    args = ap.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in RUNNERS]
    if bad or not args.sections:
        ap.error(f"--only: unknown section(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(SECTIONS)}")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    shown = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = shlex.join(["python", "benchmarks/bench_gpu.py", *shown])
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA GPU here; use --device cpu (with --tiny)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(out.read_text()) if out.is_file() else {}
    except json.JSONDecodeError:
        data = {}
    b = Bench(args)
    data.update(
        command=command,
        tiny=args.tiny,
        device=str(device),
        machine=machine(device),
        sizes={k: b.sizes[k] for k in args.sections},
        started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    t_all = time.perf_counter()
    for name in args.sections:
        t0 = time.perf_counter()
        print(f"{name}: running", flush=True)
        try:
            result = RUNNERS[name](b)
        except Exception as e:  # noqa: BLE001 - one section failing never loses the others
            result = {"error": f"{type(e).__name__}: {e}"[:1000], "traceback": traceback.format_exc()[-3000:]}
        result.update(section_s=round(time.perf_counter() - t0, 2), command=command, tiny=args.tiny,
                      device=str(device))  # fmt: skip
        data[name] = result
        write(out, data)
        state = "ERROR " + result["error"].splitlines()[0] if "error" in result else "done"
        print(f"{name}: {state} in {result['section_s']} s", flush=True)
        if b.cuda:
            torch.cuda.empty_cache()
    data["total_s"] = round(time.perf_counter() - t_all, 1)
    write(out, data)
    print(f"wrote {out} ({data['total_s']} s)")
    return data


if __name__ == "__main__":
    main()
