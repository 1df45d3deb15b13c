"""Streaming an image folder (``--data``): images/s and peak memory against the size of the
decoded dataset, the measurement behind issue 16's "a 50,000-image folder runs in bounded memory".

    python benchmarks/bench_data_stream.py [--n 50000] [--jpegs 2000] [--folder DIR]

Two synthetic folders (random content, 10 class folders), made once and kept in
``--folder`` (default ``~/.cache/advex/bench_data_stream``) so a rerun does not remake them:

- ``--n`` 32x32 RGB PNGs, streamed through ``advex.data.stream`` with the prepare of a
  CIFAR-like model (``as_model_input``: 3 channels, input size 32x32) in batches of 500;
- ``--jpegs`` photo-sized JPEGs (500x375 and 375x500, as most of ImageNet), resized to
  224x224 by the ``fit_input`` of a model with that input size (ImageNet's 0.875 centre crop),
  in batches of 100.

Each run is a fresh process: the resident set size after listing the folder (``open_images``),
before streaming, against the peak (``ru_maxrss``) after streaming every image, so the
growth is the stream's. Workers 1 and 2, prefetch 2. Writes benchmarks/results/data_stream.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10

CHILD = """
import json, resource, sys, time
import torch
from torch import nn
from advex.data import as_model_input, open_images, stream
from advex.models import Classifier

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

folder = sys.argv[1]
size, batch, workers, prefetch = map(int, sys.argv[2:6])
model = Classifier(nn.Flatten(), input_size=(size, size), crop_fraction=0.875 if size == 224 else 1.0, channels=3)
t0 = time.perf_counter()
files = open_images(folder)
listed = time.perf_counter() - t0
t0 = time.perf_counter()
fingerprint = files.fingerprint()
fingerprinted = time.perf_counter() - t0
before, peak_before = rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
spans = [(a, min(a + batch, len(files))) for a in range(0, len(files), batch)]
n = skipped = 0
checksum = 0.0
t0 = time.perf_counter()
for b in stream(files, spans, as_model_input(model), workers=workers, prefetch=prefetch):
    n += len(b)
    skipped += len(b.skipped)
    checksum += float(b.x.sum())  # the consumer touches every pixel
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"images": n, "skipped": skipped, "wall_s": wall, "listed_s": listed,
                  "fingerprint_s": fingerprinted, "rss_before": before, "peak_before": peak_before,
                  "peak": peak, "shape": list(b.x.shape[1:]), "checksum": checksum}))
"""


def _make_png(args: tuple[str, int, int]) -> None:
    import numpy as np
    from PIL import Image

    folder, lo, hi = args
    for i in range(lo, hi):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            Path(folder) / f"class{i % CLASSES}" / f"{i:06d}.png"
        )


def _make_jpeg(args: tuple[str, int, int]) -> None:
    import numpy as np
    from PIL import Image

    folder, lo, hi = args
    for i in range(lo, hi):
        rng = np.random.default_rng(i)
        w, h = (500, 375) if i % 3 else (375, 500)
        small = Image.fromarray(rng.integers(0, 256, (h // 25, w // 25, 3), dtype=np.uint8))
        photo = np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.int16)  # smooth, like a photo
        photo = np.clip(photo + rng.integers(-12, 13, photo.shape), 0, 255).astype(np.uint8)  # and some texture
        Image.fromarray(photo).save(Path(folder) / f"class{i % CLASSES}" / f"{i:06d}.jpg", quality=90)


def make_folder(folder: Path, n: int, kind: str) -> float:
    """``n`` images of ``kind`` in ``folder`` (made only if not already there); seconds spent."""
    done = folder / "done.json"
    if done.is_file() and json.loads(done.read_text()) == {"n": n, "kind": kind}:
        return 0.0
    t0 = time.perf_counter()
    for k in range(CLASSES):
        (folder / f"class{k}").mkdir(parents=True, exist_ok=True)
    step = 1000
    jobs = [(str(folder), lo, min(lo + step, n)) for lo in range(0, n, step)]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_make_png if kind == "png32" else _make_jpeg, jobs))
    done.write_text(json.dumps({"n": n, "kind": kind}))
    return time.perf_counter() - t0


def run(folder: Path, size: int, batch: int, workers: int, prefetch: int = 2) -> dict:
    argv = [sys.executable, "-c", CHILD, str(folder), str(size), str(batch), str(workers), str(prefetch)]
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode:
        sys.exit(res.stderr)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r.update(workers=workers, prefetch=prefetch, batch=batch)
    r["images_per_s"] = round(r["images"] / r["wall_s"], 1)
    r["growth"] = r["peak"] - r["rss_before"]
    c, h, w = r["shape"]
    r["decoded_bytes"] = r["images"] * c * h * w * 4  # the whole folder as float32
    r["batch_bytes"] = batch * c * h * w * 4
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="32x32 PNGs (default 50000)")
    ap.add_argument("--jpegs", type=int, default=2_000, help="photo-sized JPEGs resized to 224 (default 2000)")
    ap.add_argument("--folder", default=str(Path.home() / ".cache" / "advex" / "bench_data_stream"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_stream.json"))
    args = ap.parse_args()
    base = Path(args.folder)
    cases = [("png32", args.n, 32, 500), ("jpeg224", args.jpegs, 224, 100)]
    rows, made = [], {}
    load = [round(v, 2) for v in os.getloadavg()]  # others' work on a shared machine slows every number
    print(f"load average {load}")
    for kind, n, size, batch in cases:
        folder = base / f"{kind}_{n}"
        made[kind] = round(make_folder(folder, n, kind), 1)
        how = f"made in {made[kind]:.0f} s" if made[kind] else "cached"
        print(f"{kind}: {n} images in {folder} ({how})")
        for workers in (1, 2):
            r = run(folder, size, batch, workers)
            r.update(kind=kind, folder=str(folder))
            rows.append(r)
            print(f"  workers={workers}: {r['images_per_s']:8.0f} images/s ({r['wall_s']:.1f} s); RSS "
                  f"{r['rss_before'] / 1e6:.0f} MB before streaming, peak {r['peak'] / 1e6:.0f} MB "
                  f"(+{r['growth'] / 1e6:.0f} MB; one batch is {r['batch_bytes'] / 1e6:.1f} MB, the whole "
                  f"decoded folder {r['decoded_bytes'] / 1e6:.0f} MB); listed in {r['listed_s']:.2f} s, "
                  f"fingerprint {r['fingerprint_s']:.2f} s")  # fmt: skip
    from advex.report import machine

    Path(args.out).write_text(
        json.dumps(
            {
                "machine": machine(),
                "command": " ".join(sys.argv),
                "load_average_before_after": [load, [round(v, 2) for v in os.getloadavg()]],
                "made_s": made,
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
