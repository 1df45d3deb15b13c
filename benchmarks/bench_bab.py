"""Complete verification by branch and bound (issue 18's measured section):

    python benchmarks/bench_bab.py [--n 1000] [--timeout 60] [--configs mnist-small-ibp-0.1@0.1,...]

For each (zoo model, L-inf eps), ``advex certify --method crown,alpha-crown,bab`` on the first
``--n`` MNIST test images, as a user runs it (one process each, its wall time and peak RSS):
what CROWN, alpha-CROWN and PGD settle, and what branch and bound settles with ``--timeout``
seconds per image they leave open -- verified / falsified / timed out, and the search's
seconds per instance. The issue's full run (1,000 images, 60 s) can take hours per model on
two CPU cores; ``--n`` and ``--timeout`` make smaller runs, recorded with their settings.

Writes benchmarks/results/bab.json (each config replaces its own entry).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from _runs import advex, run_sections

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = "mnist-small-ibp-0.1@0.1,mnist-small-pgd@0.1,mnist-small-pgd@0.3,mnist-small@0.02"


def one(model: str, eps: float, args, work: Path) -> dict:
    out = work / f"{model}-{eps:g}-n{args.n}-t{args.timeout:g}"
    run = advex("certify", "--model", model, "--dataset", "mnist", "--n", str(args.n), "--eps", f"{eps:g}",
                "--method", "crown,alpha-crown,bab", "--timeout", f"{args.timeout:g}", "--quiet",
                "--out", str(out))  # fmt: skip
    got = json.loads((out / "certify.json").read_text())
    found = {}
    for r in got["results"]:
        rows = r["per_sample"]
        n = len(rows)
        entry = {"certified": r["certified_accuracy"], "not_broken_by_pgd": r["attacked_accuracy"]}
        if r["method"] == "bab":
            searched = [row["search_s"] for row in rows if row["domains"]]
            entry.update(
                verified=sum(row["status"] == "verified" for row in rows) / n,
                falsified=sum(row["status"] == "falsified" for row in rows) / n,
                timed_out=sum(row["status"] == "timeout" for row in rows) / n,
                searched=len(searched),
                search_s_mean=round(statistics.mean(searched), 2) if searched else 0.0,
                search_s_median=round(statistics.median(searched), 2) if searched else 0.0,
                search_s_max=round(max(searched), 2) if searched else 0.0,
                domains_max=max(row["domains"] for row in rows),
            )
        found[r["method"]] = entry
    alpha, bab = found["alpha-crown"], found["bab"]
    open_before = 1 - alpha["certified"] - (1 - alpha["not_broken_by_pgd"])  # neither proven nor broken
    found["open_before_bab"] = round(open_before, 4)
    found["settled_of_open"] = None if open_before <= 0 else round((open_before - bab["timed_out"]) / open_before, 4)
    run.pop("stdout_tail", None)
    run.update(images=args.n, timeout_s=args.timeout, results=found)
    print(f"{model} eps {eps:g}: {json.dumps(found)} ({run['wall_s']} s, {run['peak_rss_mb']} MB)", flush=True)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="MNIST test images per config (default 1000)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds of search per open image (default 60)")
    ap.add_argument("--configs", default=CONFIGS, help=f"MODEL@EPS,... (default {CONFIGS})")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "advex" / "bench_bab"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bab.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sections = {}
    for c in args.configs.split(","):
        model, eps = c.split("@")
        sections[c] = lambda model=model, eps=float(eps): one(model, eps, args, work)
    run_sections(sections, args.configs, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
