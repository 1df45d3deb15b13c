"""docs/reports/*.png: one screenshot of report.html per kind of run (evaluate, certify,
smoothing, demo, onepixel, patch, train), from real runs of the zoo models at modest sizes, taken in
headless Chromium at 1200 px wide.

    python benchmarks/report_screenshots.py [--work DIR] [--only demo,train] [--rerun]

Each run goes to WORK/KIND (default /tmp/advex-report-runs) and is reused unless --rerun;
needs the datasets (../shared/datasets, $ADVEX_DATA or --data-dir) and Chromium. About three
minutes on 2 quiet CPU cores (the demo two of them; evaluate 18 s, certify 7 s, onepixel 9 s,
patch 12 s, train 17 s); many times that when the cores are shared.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import Browser, find_browser  # noqa: E402

DOCS = ROOT / "docs" / "reports"
WIDTH, MAX_HEIGHT, MIN_HEIGHT = 1200, 2000, 1000  # CSS pixels; a longer page is cut at MAX_HEIGHT
MAX_BYTES = 300_000

RUNS = {
    "evaluate": ["evaluate", "--model", "mnist-small-pgd", "--dataset", "mnist", "--eps", "0,0.1,0.2,0.3", "--n", "200",
                 "--steps", "20", "--queries", "500"],
    "certify": ["certify", "--model", "mnist-small-ibp-0.1", "--dataset", "mnist", "--eps", "0.02,0.05,0.1,0.15",
                "--method", "ibp,crown", "--n", "200", "--attack-steps", "20"],
    "smoothing": ["certify", "--model", "mnist-small-gaussian-0.25", "--dataset", "mnist", "--method", "smoothing",
                  "--sigma", "0.25", "--n", "100", "--n-samples", "2000", "--attack-steps", "10"],
    "demo": ["demo", "--quiet"],
    "onepixel": ["onepixel", "--dataset", "cifar10", "--n", "24", "--pixels", "3", "--figure-n", "6"],
    "patch": ["patch", "train", "--dataset", "mnist", "--target", "3", "--size", "0.15", "--steps", "150",
              "--n", "2000", "--eval-n", "200", "--sheet-n", "11", "--quiet"],
    "train": ["train", "--dataset", "mnist", "--defence", "pgd", "--eps", "0.1", "--epochs", "4", "--train-n", "6000",
              "--attack-steps", "5", "--eval-n", "200", "--eval-steps", "10", "--quiet"],
}  # fmt: skip


def run(kind: str, out: Path) -> None:
    """The command of ``kind`` into a fresh ``out``, in its own process (it writes report.html)."""
    shutil.rmtree(out, ignore_errors=True)  # (a training run refuses a folder that holds one)
    argv = [sys.executable, "-m", "advex", *RUNS[kind], "--out", str(out)]
    print("$", " ".join(argv[2:]), flush=True)
    t0 = time.perf_counter()
    if subprocess.run(argv, stdout=subprocess.DEVNULL).returncode != 0:
        sys.exit(f"{kind}: the command failed (its error is above)")
    print(f"  {time.perf_counter() - t0:.0f} s", flush=True)


def small_png(png: bytes) -> bytes:
    """The screenshot cut at MAX_HEIGHT and saved with a 256-colour palette; while above
    MAX_BYTES, cut shorter (down to MIN_HEIGHT), then scaled down."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, MAX_HEIGHT)))
    while True:
        buf = io.BytesIO()
        image.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        if buf.tell() <= MAX_BYTES:
            return buf.getvalue()
        if image.height > MIN_HEIGHT:
            image = image.crop((0, 0, image.width, max(MIN_HEIGHT, image.height * 3 // 4)))
        else:
            image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/advex-report-runs"), help="where the runs go")
    p.add_argument("--only", default=",".join(RUNS), help="comma-separated kinds (default: all)")
    p.add_argument("--rerun", action="store_true", help="run again even where a report exists")
    args = p.parse_args()
    binary = find_browser()
    if binary is None:
        sys.exit("no Chromium on PATH (apt-get install chromium)")
    kinds = [k.strip() for k in args.only.split(",")]
    for kind in kinds:
        if args.rerun or not (args.work / kind / "report.html").exists():
            run(kind, args.work / kind)
    DOCS.mkdir(parents=True, exist_ok=True)
    with Browser(binary, width=WIDTH, height=MAX_HEIGHT) as browser:
        for kind in kinds:
            tab = browser.open(args.work / kind / "report.html")
            png = small_png(browser.screenshot(tab, full_page=True))
            (DOCS / f"{kind}.png").write_bytes(png)
            print(f"wrote docs/reports/{kind}.png ({len(png) // 1000} kB)")


if __name__ == "__main__":
    main()
