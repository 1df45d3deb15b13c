"""Complete verification by branch and bound (issue 18's measured section):

    python benchmarks/bench_bab.py [--n 1000] [--timeout 60] [--configs mnist-small-ibp-0.1@0.1,...]
    python benchmarks/bench_bab.py --configs mnist-small-pgd@0.3 --indices 200:400   # a slice of them
    python benchmarks/bench_bab.py --memory [--memory-config mnist-small-pgd@0.3@6]

For each (zoo model, L-inf eps), ``advex certify --method crown,alpha-crown,bab`` on the first
``--n`` MNIST test images, as a user runs it (one process each, its wall time and peak RSS):
what CROWN, alpha-CROWN and PGD settle, and what branch and bound settles with ``--timeout``
seconds per image they leave open -- verified / falsified / timed out, and the search's
seconds per instance. The issue's full run (1,000 images, 60 s) can take hours per model on
two CPU cores; ``--n`` and ``--timeout`` make smaller runs, recorded with their settings, and
``--indices A:B`` runs test images A to B-1 only (entry ``MODEL@EPS@A:B``), so a long run can be
made in slices whose counts add up.

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
    which = ["--indices", args.indices] if args.indices else ["--n", str(args.n)]
    out = work / f"{model}-{eps:g}-{args.indices.replace(':', '-') if args.indices else f'n{args.n}'}-t{args.timeout:g}"
    run = advex("certify", "--model", model, "--dataset", "mnist", *which, "--eps", f"{eps:g}",
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
    run.update(images=len(got["results"][0]["per_sample"]), timeout_s=args.timeout, results=found)
    if args.indices:
        run["indices"] = args.indices
    print(f"{model} eps {eps:g}: {json.dumps(found)} ({run['wall_s']} s, {run['peak_rss_mb']} MB)", flush=True)
    return run


MEMORY_PROBE = """
import resource, sys, time, torch
from advex.certify import margin_spec, trace
from advex.certify.bab import Problem, Settings, Verifier
from advex.data import load_dataset
from advex.models import frozen, load
model, eps, index, batch, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
net = load(model).eval()
x, y = load_dataset("mnist", "test").subset(index + 1).floats()
x, y = x[index:index + 1], y[index:index + 1]
nodes = trace(net, tuple(x.shape[1:]))
C = margin_spec(y, 10)[0]
p = Problem((x - eps).clamp(0, 1), (x + eps).clamp(0, 1), C, torch.zeros(len(C)))
with frozen(net):
    v = Verifier(nodes, net, Settings(batch=batch, attack_steps=0))
    v.input_split = False
    v.deadline = float("inf")
    root = v.root(p)
    v.root_pre = root.pre  # as verify() runs it: the root's intermediate bounds kept,
    dom, _ = v.bound(v._no_splits(root), p, 0)
    keep = p.failing(dom.lb).any(0)  # the open margins only, one search (copy) per margin
    p, dom = p.restrict(keep), dom.specs(keep)
    dom, _ = v.bound(v._per_group(dom, p), p, 0)
    while len(dom) < batch:  # grow to a batch of domains (not measured)
        dom, _ = v.bound(v._children(dom.take((dom.choice >= 0).nonzero().flatten())), p, v.s.steps)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for _ in range(rounds):  # rounds as the search runs them: batch parents, 2 x batch children in one pass
        parents = dom.take(torch.arange(batch))
        kids, _ = v.bound(v._children(parents.take((parents.choice >= 0).nonzero().flatten())), p, v.s.steps)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(kids), round((time.perf_counter() - t0) / rounds, 3), before // 1024, after // 1024)
"""


def memory(args) -> dict:
    """Peak memory of the batched branch evaluation: in a fresh process per batch size, the
    growth of the peak RSS over what the root left, while rounds of ``batch`` splits (2 x batch
    children, bounded in one pass) run, and the seconds per round."""
    import subprocess

    model, eps, index = args.memory_config.split("@")
    rows = []
    for batch in (16, 64, 256):
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, model, eps, index, str(batch), "3"],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
        kids, per_round, before, after = int(out[0]), float(out[1]), int(out[2]), int(out[3])
        rows.append({"batch": batch, "children_per_round": kids, "round_s": per_round, "peak_rss_before_mb": before,
                     "peak_rss_during_mb": after, "growth_mb": after - before})  # fmt: skip
        print(f"batch {batch}: {kids} children per round, {per_round} s a round, peak RSS {before} -> {after} MB",
              flush=True)  # fmt: skip
    return {"config": args.memory_config, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="MNIST test images per config (default 1000)")
    ap.add_argument("--indices", help="A:B: MNIST test images A to B-1 instead of the first --n")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds of search per open image (default 60)")
    ap.add_argument("--configs", default=CONFIGS, help=f"MODEL@EPS,... (default {CONFIGS})")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "advex" / "bench_bab"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bab.json"))
    ap.add_argument(
        "--memory-config",
        default="mnist-small-pgd@0.3@6",
        help="MODEL@EPS@IMAGE for the memory section (default mnist-small-pgd@0.3@6, an open image)",
    )
    ap.add_argument("--memory", action="store_true", help="measure the batched branch evaluation's memory only")
    args = ap.parse_args()
    if args.memory:
        run_sections({"memory": lambda: memory(args)}, "memory", Path(args.out))
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sections = {}
    for c in args.configs.split(","):
        model, eps = c.split("@")
        name = f"{c}@{args.indices}" if args.indices else c
        sections[name] = lambda model=model, eps=float(eps): one(model, eps, args, work)
    run_sections(sections, ",".join(sections), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
