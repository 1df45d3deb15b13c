"""The adversarial patch: advex against IBM ART's AdversarialPatch, one run, same model and images.

Run with the peers' virtual environment (never a dependency of advex; see bench_peers.py):

    /work/peers-venv/bin/python benchmarks/bench_patch_peers.py                  # cifar10-small, 128 images
    /work/peers-venv/bin/python benchmarks/bench_patch_peers.py --model efficientnet-lite0 --n 16 --steps 10

ART 1.20.1's PyTorch patch (AdversarialPatchPyTorch) needs torchvision, whose wheels break beside
torch 2.13 here, so the peer is ART's numpy implementation, ``AdversarialPatchNumpy``, around a
``PyTorchClassifier`` of the same model module (the one ART uses on CPU without torchvision). Its one
"iteration" transforms every one of the N images (random rotation in +-rotation_max degrees, scale
in [scale_min, scale_max] of the image side, random shift keeping the patch inside; scipy.ndimage, one
image at a time), takes the loss gradient in batches of 16, un-transforms and sums the gradients, and
makes one update. advex does the same amount of model work per step: ``Patch(steps=max_iter,
batch_size=N)`` draws N images (with replacement) and N fresh placements per Adam step, all in one
batched warp. Same rotation range; the same patch sizes (ART's scale s covers (pi/4) s^2 of a square
image with its disc; advex's size 0.196 with scale (0.8, 1.2) is ART's s in [0.4, 0.6]); no
printability changes (ART has none). Both start from their own initial patch, with their own
step rule (ART: plain gradient steps of ``--art-lr`` on the summed gradient; its default 5.0 makes
this patch oscillate between 0 and 1; advex: Adam, lr 0.05).

Only training is timed (ART ``generate``, advex ``Patch.__call__`` after an untimed two-step
warm-up; advex runs once before ART and once after; the speed-up is against the mean of the two),
with the same torch thread count. Both patches are then tested the same way, with advex's
``evaluate_patch`` (each patch with its own mask) on held-out test images at 10 random placements
(scale 1 = ART's s = 0.5), and ART's patch also with ART's own ``apply_patch(scale=0.5)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from advex.attacks import Patch, Printability, evaluate_patch
from advex.data import quantize
from advex.data.datasets import load_dataset
from advex.models import load

HERE = Path(__file__).resolve().parent


def art_patch(model, x: np.ndarray, target: int, args, num_classes: int):
    from art.attacks.evasion import AdversarialPatchNumpy
    from art.estimators.classification import PyTorchClassifier

    class APNumpy(AdversarialPatchNumpy):
        """ART 1.20.1: PyTorchClassifier stores clip_values as float32, so reset_patch's
        ``isinstance(v, float)`` fails and __init__ raises; pass a Python float."""

        def reset_patch(self, initial_patch_value):
            if isinstance(initial_patch_value, np.floating):
                initial_patch_value = float(initial_patch_value)
            super().reset_patch(initial_patch_value)

    clf = PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        channels_first=True,
        device_type="cpu",
    )
    atk = APNumpy(
        clf,
        rotation_max=float(args.rotation),
        scale_min=float(args.art_scale * 0.8),
        scale_max=float(args.art_scale * 1.2),
        learning_rate=float(args.art_lr),
        max_iter=int(args.steps),
        batch_size=16,
        targeted=True,
        verbose=False,
    )
    y = np.zeros((x.shape[0], num_classes), dtype=np.float32)
    y[:, target] = 1
    random.seed(0)
    np.random.seed(0)
    t0 = time.perf_counter()
    patch, mask = atk.generate(x=x, y=y)
    return atk, clf, patch, mask, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cifar10-small")
    ap.add_argument("--n", type=int, default=128, help="training images (CIFAR-10 test images 0..n-1)")
    ap.add_argument("--steps", type=int, default=50, help="ART iterations = advex steps")
    ap.add_argument("--target", type=int, default=0)
    ap.add_argument("--rotation", type=float, default=22.5)
    ap.add_argument("--art-scale", type=float, default=0.5, help="ART scale (patch side / image side)")
    ap.add_argument("--art-lr", type=float, default=0.5)
    ap.add_argument("--advex-lr", type=float, default=0.05)
    ap.add_argument("--eval-n", type=int, default=1000, help="held-out test images (from index 1000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "patch_peers.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = load(args.model, device="cpu").eval()
    data = load_dataset("cifar10", "test", args.data_dir)
    x, _ = data.floats(slice(0, args.n))
    xe, _ = data.floats(slice(1000, 1000 + args.eval_n))
    if model.input_size is not None:  # ImageNet model: CIFAR images upscaled to its input
        x = quantize(model.fit_input(x))
        xe = quantize(model.fit_input(xe))
    k = model.num_classes
    size = math.pi / 4 * args.art_scale**2  # the disc of ART's patch at scale art_scale
    rows = {}

    def advex_run():
        atk = Patch(size=size, steps=args.steps, batch_size=args.n, lr=args.advex_lr, rotation=args.rotation,
                    scale=(0.8, 1.2), printability=Printability.none(), seed=0)  # fmt: skip
        t0 = time.perf_counter()
        res = atk(model, x, args.target)
        return atk, res, time.perf_counter() - t0

    Patch(size=size, steps=2, batch_size=args.n, seed=1)(model, x, args.target)  # warm-up, untimed
    atk, res, t_advex = advex_run()
    ev = evaluate_patch(model, res.patch, xe, args.target, size=size, mask=res.mask, placements=10)
    rows["advex"] = {
        "attack": repr(atk),
        "train_time_s": round(t_advex, 2),
        "success_rate": round(ev.success_rate, 4),
        "mean_target_prob": round(float(ev.target_prob[ev.eligible].mean()), 4),
    }
    print(f"advex: {rows['advex']}", flush=True)

    art_atk, clf, patch, mask, t_art = art_patch(model, x.numpy(), args.target, args, k)
    p = quantize(torch.from_numpy(np.asarray(patch, dtype=np.float32)))
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))
    m = m[None] if m.ndim == 2 else m[:1]
    ev_art = evaluate_patch(model, p, xe, args.target, size=size * float(m.mean()) / (math.pi / 4), mask=m,
                            placements=10)  # fmt: skip
    random.seed(123)
    xp = art_atk.apply_patch(xe.numpy(), scale=args.art_scale)
    pred = clf.predict(xp.astype(np.float32), batch_size=64).argmax(1)
    clean = clf.predict(xe.numpy(), batch_size=64).argmax(1)
    keep = clean != args.target
    rows["art"] = {
        "attack": f"AdversarialPatchNumpy(rotation_max={args.rotation}, scale {0.8 * args.art_scale:.2f}-"
        f"{1.2 * args.art_scale:.2f}, learning_rate={args.art_lr}, max_iter={args.steps}, batch_size=16)",
        "version": version("adversarial-robustness-toolbox"),
        "train_time_s": round(t_art, 2),
        "success_rate": round(ev_art.success_rate, 4),
        "mean_target_prob": round(float(ev_art.target_prob[ev_art.eligible].mean()), 4),
        "success_rate_art_apply_patch": round(float((pred[keep] == args.target).mean()), 4),
    }
    print(f"art: {rows['art']}", flush=True)
    _, res2, t_advex2 = advex_run()  # again, after ART: the machine's speed did not drift
    rows["advex"]["train_time_s_repeat"] = round(t_advex2, 2)
    rows["speedup_vs_art"] = round(t_art / ((t_advex + t_advex2) / 2), 1)  # against the mean of the two
    result = {
        "model": args.model,
        "train_images": args.n,
        "steps": args.steps,
        "samples_per_step": args.n,
        "patch_area_fraction": round(size, 4),
        "eval_images": args.eval_n,
        "eval_placements": 10,
        "target": args.target,
        "results": rows,
        "command": "python benchmarks/bench_patch_peers.py "
        + " ".join(f"--{k_.replace('_', '-')} {v}" for k_, v in vars(args).items() if k_ not in ("out", "data_dir")),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads} threads",
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    data_out = json.loads(out.read_text()) if out.exists() else {}
    data_out[args.model] = result
    out.write_text(json.dumps(data_out, indent=2) + "\n")


if __name__ == "__main__":
    main()
