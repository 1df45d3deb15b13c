"""Randomized smoothing (issue 17's measured section):

    python benchmarks/bench_smoothing.py [--only zoo,imagenet,speed] [--images 500]

- ``zoo``: ``advex certify --method smoothing`` on the first ``--images`` CIFAR-10 and MNIST
  test images (N = 100,000, n0 = 100, alpha = 0.001) for each noise-trained zoo model, at its
  own sigma, beside SmoothAdv at the same radii: certified and attacked accuracy at L2 radius
  0.25, 0.5, 0.75, 1.0, against the published figures (constants below, with their sources).
- ``imagenet``: the ImageNet default (EfficientNet-Lite0, never trained with noise) on the
  sample photos at the network input, sigma 0.12 and 0.25, N = 1,000 (CPU time): what it certifies.
- ``speed``: advex's ``Smooth.certify`` against the floor, the network's forward passes alone
  (N + n0 per image, distinct inputs) at its best batch size, alternating in one process (100
  and 10 images, N = 20,000); then against IBM ART's ``PyTorchRandomizedSmoothing.certify`` on
  the same 10 images, N = 100,000, n0 = 100, alpha = 0.001, each in its own process for its
  peak memory. The ART part needs ART (the peers' venv:
  ``pip install adversarial-robustness-toolbox statsmodels``, with advex from this checkout)
  and is skipped, saying so, without it.

Writes benchmarks/results/smoothing.json (each section replaces its own entry).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _runs import advex, run_sections

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("zoo", "imagenet", "speed")
RADII = (0.25, 0.5, 0.75, 1.0)
ZOO = {  # model: (dataset, sigma)
    "cifar10-small-gaussian-0.25": ("cifar10", 0.25),
    "cifar10-small-gaussian-0.5": ("cifar10", 0.5),
    "mnist-small-gaussian-0.25": ("mnist", 0.25),
    "mnist-small-gaussian-0.5": ("mnist", 0.5),
}
# Published certified accuracy (%) at L2 radius 0.25 / 0.5 / 0.75 / 1.0, N = 100,000, alpha = 0.001, on 500
# CIFAR-10 test images (every 20th), as tabulated in Salman et al.'s repository (Hadisalman/smoothing-adversarial,
# analysis/latex/{cohen,our}_cifar10_certified_outer_envelop; their Table 1). Neither paper reports MNIST.
PUBLISHED = {
    "cifar10": {
        "Cohen et al. 2019, ResNet-110, Gaussian noise, best sigma per radius": [61, 43, 32, 22],
        "Salman et al. 2019, ResNet-110, SmoothAdv, best model per radius": [74, 57, 48, 38],
    },
}
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "motorcycle_left.png", "clock_motion.png",
          "horse.png")  # fmt: skip


def zoo(args, work: Path) -> dict:
    from advex.models import names

    found = dict(args.previous.get("zoo", {}).get("models", {}))  # a run of some models keeps the others'
    for model, (dataset, sigma) in ZOO.items():
        if args.models and model not in args.models.split(","):
            continue
        if model not in names():
            found[model] = {"skipped": "not in this checkout's zoo"}
            continue
        out = work / f"zoo-{model}"
        argv = ["certify", "--model", model, "--dataset", dataset, "--n", str(args.images), "--method",
                    "smoothing", "--sigma", str(sigma), "--n0", "100", "--n-samples", "100000", "--alpha", "0.001",
                    "--eps", ",".join(map(str, RADII)), "--attack-steps", "20", "--attack-samples", "8",
                    "--attack-n", "1000", "--quiet", "--out", str(out)]  # fmt: skip
        done = out / "certify.json"
        command = "advex " + " ".join(argv)
        same = done.is_file() and json.loads(done.read_text())["command"].replace(" --resume", "") == command
        if same and not args.rerun:
            run = {"command": command, "reused": f"{done}, from an earlier run of this command"}
        else:  # an interrupted run continues from its journal
            run = advex(*argv, *(["--resume"] if (out / "journal" / "run.json").is_file() else []))
        got = json.loads(done.read_text())
        run.update(
            sigma=sigma, dataset=dataset, images=len(got["per_image"]), abstained=got["abstained"],
            certified={str(r["eps"]): r["certified_accuracy"] for r in got["results"]},
            attacked={str(r["eps"]): r["attacked_accuracy"] for r in got["results"]},
            smoothed_accuracy=got["results"][0]["clean_accuracy"], timing=got["run"],
        )  # fmt: skip
        found[model] = run
        print(
            f"{model}: certified {run['certified']}, attacked {run['attacked']} ({run.get('wall_s', 'reused')} s)",
            flush=True,
        )
    return {"models": found, "published": PUBLISHED}


def imagenet(args, work: Path) -> dict:
    import skimage.data

    photos = [str(Path(skimage.data.data_dir) / p) for p in PHOTOS]
    found = {}
    for sigma in (0.12, 0.25):
        out = work / f"imagenet-{sigma}"
        run = advex("certify", "--model", "efficientnet-lite0", "--images", *photos, "--method", "smoothing",
                    "--sigma", str(sigma), "--n0", "100", "--n-samples", "1000", "--alpha", "0.001",
                    "--eps", "0.1,0.25,0.5", "--no-attack", "--noise-batch", "50", "--quiet",
                    "--out", str(out))  # fmt: skip
        got = json.loads((out / "certify.json").read_text())
        run["per_image"] = [{k: r[k] for k in ("image", "label", "prediction", "radius", "p_lower", "count")}
                            for r in got["per_image"]]  # fmt: skip
        run["certified"] = {str(r["eps"]): r["certified_accuracy"] for r in got["results"]}
        run["abstained"] = got["abstained"]
        found[str(sigma)] = run
        print(f"EfficientNet-Lite0 sigma {sigma}: {got['abstained']} of {len(photos)} abstained; "
              f"certified {run['certified']}", flush=True)  # fmt: skip
    return found


CHILD = r"""
import json, resource, statistics, sys, time
import numpy as np
import torch
from advex.data import load_dataset
from advex.evaluation import reuse_freed_memory
from advex.models import load

what, model_name, sigma, n_images, n, n0, rows = sys.argv[1:8]
sigma, n_images, n, n0, rows = float(sigma), int(n_images), int(n), int(n0), int(rows)
reuse_freed_memory()  # as the advex command does; the floor below runs in the same process, so gets it too
model = load(model_name).eval()
dataset = "mnist" if model_name.startswith("mnist") else "cifar10"
x, y = load_dataset(dataset, "test").subset(n_images).floats()
out = {"what": what, "threads": torch.get_num_threads()}

def floor(batch, passes, bank):
    with torch.no_grad():
        t0 = time.perf_counter()
        for i in range(passes):
            model(bank[i % len(bank)]).argmax(1)
        return time.perf_counter() - t0

if what == "compare":  # the floor and advex alternating in one process: the machine's drift hits both
    from advex.certify import Smooth
    with torch.no_grad():  # the best batch size for the network's forward pass
        rates = {}
        for bs in (250, 500, 1000, 2000, 4000):
            bank = [torch.rand(bs, *x.shape[1:]) for _ in range(4)]
            floor(bs, 2, bank)
            rates[bs] = bs * 20 / floor(bs, 20, bank)
    best = max(rates, key=rates.get)
    bank = [torch.rand(best, *x.shape[1:]) for _ in range(16)]  # distinct inputs, as no two passes see the same
    passes = n_images * (n + n0) // best
    smooth = Smooth(model, sigma, batch_size=best)
    smooth.certify(x[:2], n0=10, n=best)
    fl, ad = [], []
    for rep in range(3):
        fl.append(floor(best, passes, bank))
        t0 = time.perf_counter()
        smooth.certify(x, n0=n0, n=n, alpha=0.001, seed=rep)
        ad.append(time.perf_counter() - t0)
    out.update(rates=rates, best_batch=best, floor_s=fl, advex_s=ad, floor_median_s=statistics.median(fl),
               advex_median_s=statistics.median(ad), ratio=statistics.median(a / f for a, f in zip(ad, fl)))
elif what == "advex":
    from advex.certify import Smooth
    t0 = time.perf_counter()
    c = Smooth(model, sigma, batch_size=rows).certify(x, n0=n0, n=n, alpha=0.001, seed=0)
    out.update(seconds=time.perf_counter() - t0, label=c.label.tolist(), radius=c.radius.tolist(),
               forward_passes=c.forward_passes)
elif what == "art":
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    np.random.seed(0)
    rs = PyTorchRandomizedSmoothing(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                    nb_classes=10, device_type="cpu", sample_size=n0, scale=sigma, alpha=0.001)
    t0 = time.perf_counter()
    label, radius = rs.certify(x.numpy(), n=n, batch_size=rows)
    out.update(seconds=time.perf_counter() - t0, label=[int(v) for v in label], radius=[float(v) for v in radius])
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _child(*argv) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, *map(str, argv)], capture_output=True, text=True)
    if p.returncode:
        sys.exit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def speed(args, work: Path) -> dict:
    """advex against the floor (one process, alternating, at the command's default batch of
    100 images and at 10), then advex against ART on 10 images at N = 100,000 (a process each)."""
    from advex.models import names

    model = args.speed_model if args.speed_model in names() else "cifar10-small"
    sigma, n0 = 0.25, 100
    found = {"model": model, "sigma": sigma, "n0": n0, "alpha": 0.001}
    for images in (100, 10):
        r = _child("compare", model, sigma, images, 20_000, n0, 0)
        found[f"floor, {images} images, N 20000"] = r
        print(f"{images} images: advex {r['advex_median_s']:.1f} s, the floor {r['floor_median_s']:.1f} s "
              f"(batch {r['best_batch']}): {r['ratio']:.3f}x", flush=True)  # fmt: skip
    try:
        import art  # noqa: F401
    except ImportError:
        print("speed: IBM ART is not installed here (the peers' venv has it); the ART comparison skipped", flush=True)
        found["art"] = "skipped: ART not installed"
        return found
    rows = found["floor, 10 images, N 20000"]["best_batch"]
    a = _child("advex", model, sigma, 10, 100_000, n0, rows)
    b = _child("art", model, sigma, 10, 100_000, n0, rows)
    agree = sum(int(p == q) for p, q in zip(a["label"], b["label"]))
    found.update(
        advex=a, art=b, art_over_advex=round(b["seconds"] / a["seconds"], 2), same_label=f"{agree}/10",
        radius_mean_abs_difference=round(sum(abs(p - q) for p, q in zip(a["radius"], b["radius"])) / 10, 4),
    )  # fmt: skip
    print(f"10 images, N 100000: advex {a['seconds']:.1f} s ({a['peak_rss_mb']:.0f} MB), ART {b['seconds']:.1f} s "
          f"({b['peak_rss_mb']:.0f} MB): {found['art_over_advex']}x", flush=True)  # fmt: skip
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    ap.add_argument("--images", type=int, default=500, help="test images per zoo model (default 500)")
    ap.add_argument("--speed-model", default="cifar10-small-gaussian-0.25")
    ap.add_argument("--rerun", action="store_true", help="zoo: certify again a model whose run folder is complete")
    ap.add_argument("--models", default=None, help="zoo: only these models (comma-separated; the others' results kept)")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "advex" / "bench_smoothing"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "smoothing.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    args.previous = json.loads(out.read_text()) if out.is_file() else {}
    sections = {"zoo": zoo, "imagenet": imagenet, "speed": speed}
    run_sections({k: (lambda f=f: f(args, work)) for k, f in sections.items()}, args.only, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
