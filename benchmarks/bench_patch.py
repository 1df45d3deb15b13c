"""Benchmark of issue 6: the adversarial patch (Brown et al. 2017), targeted success against size.

    python benchmarks/bench_patch.py                      # both parts below
    python benchmarks/bench_patch.py --part imagenet --steps 250
    python benchmarks/bench_patch.py --part cifar --cifar-steps 2000

ImageNet default (EfficientNet-Lite0), target ostrich: one patch per size, trained on the
five sample photos (chelsea, coffee, camera, rocket, astronaut) at the 224x224 network
input with random crops, flips and colour changes; tested on photos it never saw (the
other scikit-image photos that ship offline, and the first CIFAR-10 test images upscaled
to 224x224), at --placements random placements each (rotation +-22.5 degrees, anywhere the
whole patch fits, scale 1), 8-bit quantised.

CIFAR-10 (cifar10-small), target airplane: trained on the train split, tested on the first
1000 test images, 10 random placements each.

Success counts (image, placement) pairs classified as the target, over the images the
model does not already classify as the target. Results are merged into
benchmarks/results/patch.json after every configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from advex.attacks import Patch, evaluate_patch
from advex.data import quantize, sample_photos
from advex.data.datasets import load_dataset
from advex.models import load

HERE = Path(__file__).resolve().parent
TRAIN_PHOTOS = ["chelsea", "coffee", "camera", "rocket", "astronaut"]
HELD_OUT_PHOTOS = [
    "stereo_motorcycle", "clock", "retina", "coins", "horse", "hubble_deep_field", "immunohistochemistry",
    "page", "brick", "grass", "gravel", "colorwheel", "moon", "text", "cell",
]  # fmt: skip


def save(out: Path, key: str, value: dict) -> None:
    data = json.loads(out.read_text()) if out.exists() else {}
    data[key] = value
    data["machine"] = (
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    out.write_text(json.dumps(data, indent=2) + "\n")


def at_input(model, photos) -> torch.Tensor:
    return torch.cat([quantize(model.fit_input(p.pixels[None])) for p in photos])


def summary(ev, n_photos: int | None = None) -> dict:
    hits = ev.hits
    out = {
        "success_rate": round(ev.success_rate, 4),
        "eligible_images": int(ev.eligible.sum()),
        "placements": int(hits.shape[1]),
        "mean_target_prob": round(float(ev.target_prob[ev.eligible].mean()), 4),
        "eval_time_s": round(ev.time_s, 1),
    }
    if n_photos is not None:  # split photos / upscaled CIFAR images
        for name, sl in (("photos", slice(0, n_photos)), ("cifar_upscaled", slice(n_photos, None))):
            e = ev.eligible[sl]
            h = hits[sl][e]
            out[f"{name}_success_rate"] = round(float(h.float().mean()), 4) if h.numel() else None
            out[f"{name}_eligible"] = int(e.sum())
    return out


def imagenet(args, out: Path) -> None:
    model = load("efficientnet-lite0", device=args.device)
    x_train = at_input(model, sample_photos(TRAIN_PHOTOS))
    photos = sample_photos(HELD_OUT_PHOTOS)
    cifar = load_dataset("cifar10", "test", args.data_dir)
    x_c = quantize(model.fit_input(cifar.images[: args.cifar_upscaled].float().div(255)))
    x_eval = torch.cat([at_input(model, photos), x_c])
    for size in args.sizes:
        atk = Patch(size=size, steps=args.steps, batch_size=args.batch_size, lr=args.lr, augment=True, seed=0)
        res = atk(model, x_train, "ostrich")
        kw = dict(size=size, mask=res.mask, placements=args.placements)
        ev = evaluate_patch(model, res.patch, x_eval, "ostrich", **kw)
        ev_tr = evaluate_patch(model, res.patch, x_train, "ostrich", **kw)
        row = {
            "attack": repr(atk),
            "train_time_s": round(res.time_s, 1),
            "patch_pixels": res.patch.shape[-1],
            "held_out": summary(ev, len(photos)),
            "training_photos_success_rate": round(ev_tr.success_rate, 4),
            "final_training_curve": {k: v[-5:] for k, v in res.curve.items()},
        }
        print(f"imagenet size {size}: {json.dumps(row)}", flush=True)
        save(out, f"imagenet/size={size}", row)
        if args.save_patches:
            from advex.data import save_patch

            save_patch(out.parent / f"patch_imagenet_{size}.png", res.patch, res.mask, meta={"size": size})


def cifar(args, out: Path) -> None:
    model = load("cifar10-small", device=args.device)
    train = load_dataset("cifar10", "train", args.data_dir)
    test = load_dataset("cifar10", "test", args.data_dir)
    for size in args.sizes:
        atk = Patch(size=size, steps=args.cifar_steps, batch_size=128, lr=args.lr, seed=0)
        res = atk(model, train.images, "airplane")
        ev = evaluate_patch(
            model, res.patch, test.images[: args.cifar_test_n], "airplane", size=size, mask=res.mask, placements=10
        )
        row = {
            "attack": repr(atk),
            "train_time_s": round(res.time_s, 1),
            "patch_pixels": res.patch.shape[-1],
            "test": summary(ev),
            "final_training_curve": {k: v[-5:] for k, v in res.curve.items()},
        }
        print(f"cifar size {size}: {json.dumps(row)}", flush=True)
        save(out, f"cifar10-small/size={size}", row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["imagenet", "cifar", "all"], default="all")
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.25])
    ap.add_argument("--steps", type=int, default=250, help="ImageNet Adam steps")
    ap.add_argument("--batch-size", type=int, default=16, help="ImageNet samples per step")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--placements", type=int, default=10)
    ap.add_argument("--cifar-upscaled", type=int, default=100, help="CIFAR-10 test images in the ImageNet test set")
    ap.add_argument("--cifar-steps", type=int, default=2000)
    ap.add_argument("--cifar-test-n", type=int, default=1000)
    ap.add_argument("--save-patches", action="store_true")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "results" / "patch.json"))
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.part in ("cifar", "all"):
        cifar(args, out)
    if args.part in ("imagenet", "all"):
        imagenet(args, out)
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
