"""Whole runs on image folders (issue 16's measured section), each command run as a user
runs it, in a fresh process, timed and its peak memory read by ``wait4``:

    python benchmarks/bench_data_runs.py [--only cifar,photos,torchrun,memory] [--work DIR]

- ``cifar``: CIFAR-10's test set exported as PNGs in class folders (plus a CSV listing them
  in the test set's order). ``advex evaluate`` on ``--dataset cifar10``, on the CSV and on the
  class folder; the numbers compared, and the loader's images/s (the folder streamed at the
  model's input, nothing else) beside the evaluation's.
- ``photos``: the ImageNet default on a folder of photos (scikit-image's), one sub-folder
  per class named by class name (one by WordNet id), of every size and mode (grayscale,
  RGBA, JPEG).
- ``torchrun``: the same evaluate and certify as one plain process and under ``torchrun``
  with 1 and 2 processes: identical results, wall times.
- ``memory``: CIFAR-10's training set as a 50,000-PNG class folder, ``advex evaluate --data``
  on all of it against ``--n 500`` and ``--n 25000`` of it and against ``--dataset cifar10
  --split train`` (which holds the split in memory): peak RSS.

The exported folders are kept in ``--work`` (default ``~/.cache/advex/bench_data_runs``), so a
rerun does not remake them. Needs the full CIFAR-10 (``python ../shared/datasets/fetch_cifar10.py``).
Writes benchmarks/results/data_runs.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from _runs import advex, run_sections

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("cifar", "photos", "torchrun", "memory")
# The evaluation measured on CIFAR-10: APGD-CE and Square at two radii, budgets cut for the CPU.
CIFAR_EVAL = ["--model", "cifar10-small-pgd", "--eps", "2/255,8/255", "--attacks", "apgd-ce,square",
              "--steps", "20", "--queries", "100", "--batch-size", "100"]  # fmt: skip
PHOTOS = {  # class folder -> scikit-image photo: a person's label, by class name (one by WordNet id)
    "n02123045": "chelsea.png",  # tabby
    "espresso": "coffee.png",
    "missile": "rocket.jpg",  # JPEG
    "tripod": "camera.png",  # grayscale
    "moped": "motorcycle_left.png",
    "wall clock": "clock_motion.png",  # grayscale
    "sorrel": "horse.png",  # RGBA
}
RUN_ONLY = {"run", "written", "command", "dataset", "images", "advex_version", "torch", "python", "machine", "device"}


def results_of(path: Path) -> dict:
    """A summary JSON without what is of the run alone (timings, provenance, the data's name)."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in RUN_ONLY}


def export(split: str, folder: Path) -> Path:
    """CIFAR-10's ``split`` as PNGs in class folders under ``folder`` and a CSV listing them in
    the split's order (made once); the CSV's path."""
    from advex.data import load_dataset, save_png

    csv = folder / "list.csv"
    if csv.is_file():
        return csv
    d = load_dataset("cifar10", split)
    lines = ["path,label"]
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for i in range(len(d)):
        cls = d.classes[int(d.labels[i])]
        f = tmp / cls / f"{i:05d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        save_png(d.images[i].float() / 255, f)
        lines.append(f"{cls}/{i:05d}.png,{cls}")
    (tmp / "list.csv").write_text("\n".join(lines) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return csv


LOADER = """
import sys, time
from advex.data import as_model_input, open_images, stream
from advex.models import load
model = load(sys.argv[2])
files = open_images(sys.argv[1], model.classes, model.synonyms)
spans = [(a, min(a + 100, len(files))) for a in range(0, len(files), 100)]
t0 = time.perf_counter()
n = sum(len(b) for b in stream(files, spans, as_model_input(model), workers=2))
print(n, time.perf_counter() - t0)
"""


def loader_speed(path: Path, model: str) -> dict:
    """The folder streamed at ``model``'s input in batches of 100, as a run reads it, nothing else."""
    out = subprocess.run([sys.executable, "-c", LOADER, str(path), model], capture_output=True, text=True, check=True)
    n, wall = out.stdout.split()
    return {"images": int(n), "wall_s": round(float(wall), 2), "images_per_s": round(int(n) / float(wall), 1)}


def cifar(work: Path) -> dict:
    csv = export("test", work / "cifar10-test")
    folder = csv.parent
    runs = {
        "dataset": advex("evaluate", *CIFAR_EVAL, "--dataset", "cifar10", "--n", "10000", "--quiet",
                         "--out", str(work / "ev-dataset")),
        "csv": advex("evaluate", *CIFAR_EVAL, "--data", str(csv), "--n", "10000", "--quiet",
                     "--out", str(work / "ev-csv")),
        "folder": advex("evaluate", *CIFAR_EVAL, "--data", str(folder), "--n", "10000", "--quiet",
                        "--out", str(work / "ev-folder")),
    }  # fmt: skip
    got = {k: results_of(work / f"ev-{k}" / "evaluation.json") for k in runs}
    for k, r in runs.items():
        r["numbers"] = {f: got[k][f] for f in ("n", "clean_acc", "per_attack", "ensemble", "warnings")}
        r["images_per_s"] = round(got[k]["n"] / r["wall_s"], 1)
    return {
        "runs": runs,
        "csv_equals_dataset": got["csv"] == got["dataset"],
        "folder_numbers_equal_dataset": runs["folder"]["numbers"] == runs["dataset"]["numbers"],
        "loader": loader_speed(folder, "cifar10-small-pgd"),
    }


def photos(work: Path) -> dict:
    import skimage.data

    folder = work / "photos"
    shutil.rmtree(folder, ignore_errors=True)
    for cls, name in PHOTOS.items():
        (folder / cls).mkdir(parents=True)
        shutil.copy(Path(skimage.data.data_dir) / name, folder / cls / name)
    out = work / "ev-photos"
    r = advex("evaluate", "--model", "efficientnet-lite0", "--data", str(folder), "--eps", "0.1/255,0.25/255,1/255",
              "--attacks", "apgd-ce,square", "--steps", "20", "--queries", "200", "--quiet",
              "--out", str(out))  # fmt: skip
    r["numbers"] = {f: results_of(out / "evaluation.json")[f] for f in ("n", "clean_acc", "per_attack", "ensemble")}
    r["photos"] = PHOTOS
    return r


def torchrun(work: Path) -> dict:
    csv = export("test", work / "cifar10-test")
    cases = {
        "evaluate": ["evaluate", *CIFAR_EVAL, "--data", str(csv), "--indices", "0:2000", "--quiet"],
        "certify": ["certify", "--model", "cifar10-small-ibp-8", "--dataset", "cifar10", "--indices", "0:2000",
                    "--eps", "2/255,8/255", "--method", "ibp,crown", "--attack-steps", "20", "--quiet"],
    }  # fmt: skip
    summary = {"evaluate": "evaluation.json", "certify": "certify.json"}
    found = {}
    for name, argv in cases.items():
        rows, got = {}, {}
        for procs in (0, 1, 2):
            key = f"torchrun {procs}" if procs else "plain"
            out = work / f"tr-{name}-{procs}"
            shutil.rmtree(out, ignore_errors=True)
            rows[key] = advex(*argv, "--out", str(out), torchrun=procs)
            got[key] = results_of(out / summary[name])
        found[name] = {"runs": rows, "identical": all(g == got["plain"] for g in got.values())}
    return found


def memory(work: Path) -> dict:
    folder = export("train", work / "cifar10-train").parent
    argv = ["evaluate", "--model", "cifar10-small", "--eps", "8/255", "--attacks", "fgsm", "--batch-size", "500",
            "--quiet"]  # fmt: skip
    rows = {}
    for key, extra in {
        "folder, 500 images": ["--data", str(folder), "--n", "500"],
        "folder, 25000 images": ["--data", str(folder), "--n", "25000"],
        "folder, 50000 images": ["--data", str(folder), "--n", "50000"],
        "dataset, 50000 images": ["--dataset", "cifar10", "--split", "train", "--n", "50000"],
    }.items():
        out = work / ("mem-" + key.replace(", ", "-").replace(" ", ""))
        shutil.rmtree(out, ignore_errors=True)
        rows[key] = advex(*argv, *extra, "--out", str(out))
        rows[key]["numbers"] = {f: results_of(out / "evaluation.json")[f] for f in ("n", "clean_acc", "ensemble")}
    rows["decoded_folder_mb"] = {"uint8": round(50_000 * 3 * 32 * 32 / 1e6, 1),
                                 "float32": round(50_000 * 3 * 32 * 32 * 4 / 1e6, 1)}  # fmt: skip
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "advex" / "bench_data_runs"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_runs.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sections = {"cifar": cifar, "photos": photos, "torchrun": torchrun, "memory": memory}
    run_sections({k: (lambda f=f: f(work)) for k, f in sections.items()}, args.only, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
