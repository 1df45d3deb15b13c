"""advex verify beside alpha-beta-CROWN on the same instances, on this machine, one after the other:

    python benchmarks/bench_abcrown.py --abcrown ABCROWN/complete_verifier --python ABCROWN_VENV/bin/python \\
        (--mnist MODEL@EPS@I,J,... | --instances FILE.csv) --config mnist|acasxu [--timeout 60] [--name NAME]

alpha-beta-CROWN (https://github.com/Verified-Intelligence/alpha-beta-CROWN, the VNN-COMP winner) is
not shipped with advex and not installed by it: ``--abcrown`` is its ``complete_verifier`` folder,
``--python`` the interpreter of a virtual environment where it runs (its own auto_LiRPA beside
torch). Both tools get the same ONNX network, the same VNNLIB property and the same time limit, on
the same CPU threads: ``advex verify --instances`` in one process, alpha-beta-CROWN in one process
per instance (its start-up and model loading, several seconds, are outside its own ``Time:``).

``--mnist MODEL@EPS@I,J,...``: the zoo model exported to ONNX (``advex models --export``) and, per
MNIST test image, the VNNLIB robustness property (the clipped L-inf box, unsafe where some other
logit reaches the label's). ``--instances``: ``onnx,vnnlib,timeout`` lines (a VNN-COMP set's CSV).
``--config``: alpha-beta-CROWN's settings, written next to the results: ``mnist`` (beta-CROWN
branch and bound: alpha-CROWN 100 steps first, batch 64, kFSB with 3 candidates, PGD 30 restarts
first) or ``acasxu`` (its own VNN-COMP ACAS Xu file: input splitting on the widest side, CROWN
bounds, batch 16384, input clipping), with ``device: cpu``.

Writes benchmarks/results/abcrown.json (each ``--name`` replaces its own entry).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _runs import advex, run_sections

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "mnist": """general:
  device: cpu
  complete_verifier: bab
  enable_incomplete_verification: true
solver:
  batch_size: 64
  alpha-crown:
    iteration: 100
  beta-crown:
    iteration: 20
bab:
  branching:
    method: kfsb
    candidates: 3
attack:
  pgd_order: before
  attack_mode: PGD
  pgd_restarts: 30
  pgd_steps: 100
""",
    "acasxu": """general:
  device: cpu
solver:
  batch_size: 16384
  bound_prop_method: crown
bab:
  branching:
    method: naive
    input_split:
      enable: True
      reorder_bab: True
  clip_n_verify:
    clip_input_domain:
      enabled: True
attack:
  pgd_order: after
  pgd_restarts: 10000
  pgd_restart_when_stuck: True
""",
}


def mnist_instances(spec: str, timeout: float, work: Path) -> Path:
    """MODEL@EPS@I,J,...: the model's ONNX file, one VNNLIB robustness property per test image,
    and their instances CSV."""
    from advex.data import load_dataset

    model, eps, idx = spec.split("@")
    eps, idx = float(eps), [int(i) for i in idx.split(",")]
    onnx = work / f"{model}.onnx"
    if not onnx.is_file():
        advex("models", "--export", model, str(onnx))
    x, y = load_dataset("mnist", "test").subset(max(idx) + 1).floats()
    rows = []
    for i in idx:
        lo, hi = (x[i] - eps).clamp(0, 1).flatten(), (x[i] + eps).clamp(0, 1).flatten()
        label = int(y[i])
        lines = [f"; MNIST test image {i}, label {label}, L-inf eps {eps:g}"]
        lines += [f"(declare-const X_{j} Real)" for j in range(lo.numel())]
        lines += [f"(declare-const Y_{j} Real)" for j in range(10)]
        for j, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
            lines += [f"(assert (>= X_{j} {a!r}))", f"(assert (<= X_{j} {b!r}))"]
        others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(10) if j != label)
        lines.append(f"(assert (or {others}))")
        prop = work / f"{model}_{eps:g}_{i}.vnnlib"
        prop.write_text("\n".join(lines) + "\n")
        rows.append(f"{onnx},{prop},{timeout:g}")
    inst = work / "instances.csv"
    inst.write_text("\n".join(rows) + "\n")
    return inst


def abcrown(args, config: Path, onnx: str, prop: str, timeout: float, out: Path) -> dict:
    """One instance in a fresh alpha-beta-CROWN process: its answer, its own time, the wall time
    of the process and the domains it visited."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [args.python, "abcrown.py", "--config", str(config), "--onnx_path", onnx, "--vnnlib_path", prop,
           "--timeout", f"{timeout:g}", "--results_file", str(out)]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=args.abcrown, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log = p.stdout + p.stderr
    (out.with_suffix(".log")).write_text(log)
    result = re.findall(r"^Result: (\S+)", log, re.M)
    own = re.findall(r"^Time: ([0-9.]+)", log, re.M)
    visited = re.findall(r"^(\d+) domains visited", log, re.M)
    answer = result[-1] if result else f"error (exit {p.returncode})"
    answer = {"safe": "unsat", "unsafe": "sat", "safe-incomplete": "unsat", "unsafe-pgd": "sat"}.get(answer, answer)
    return {"result": answer, "time_s": float(own[-1]) if own else None, "wall_s": round(wall, 2),
            "domains": int(visited[-1]) if visited else 0}  # fmt: skip


def side_by_side(args) -> dict:
    work = Path(args.work) / args.name
    work.mkdir(parents=True, exist_ok=True)
    inst = mnist_instances(args.mnist, args.timeout, work) if args.mnist else Path(args.instances)
    lines = [r for r in csv.reader(inst.open()) if len(r) == 3]
    if not args.mnist:  # one limit for both tools
        fixed = work / "instances.csv"
        fixed.write_text("".join(f"{a},{b},{args.timeout:g}\n" for a, b, _ in lines))
        inst = fixed
    run = advex("verify", "--instances", str(inst), "--out", str(work / "advex"))
    ours = list(csv.DictReader((work / "advex" / "results.csv").open()))
    config = work / f"abcrown_{args.config}.yaml"
    config.write_text(CONFIGS[args.config])
    per = []
    for (onnx, prop, _), mine in zip(lines, ours):
        theirs = abcrown(args, config, onnx, prop, args.timeout, work / f"abcrown_{Path(prop).stem}.txt")
        row = {"onnx": Path(onnx).name, "vnnlib": Path(prop).name, "advex": mine["result"],
               "advex_s": float(mine["time_s"]), "advex_domains": int(mine["domains"]),
               "abcrown": theirs["result"], "abcrown_s": theirs["time_s"], "abcrown_wall_s": theirs["wall_s"],
               "abcrown_domains": theirs["domains"]}  # fmt: skip
        per.append(row)
        print(row, flush=True)

    def count(key):
        return {k: sum(r[key] == k for r in per) for k in ("unsat", "sat", "timeout")} | {
            "other": sum(r[key] not in ("unsat", "sat", "timeout") for r in per)
        }

    def med(key, tool):
        got = [r[key] for r in per if r[tool] in ("unsat", "sat") and r[key] is not None]
        return round(statistics.median(got), 2) if got else None

    clash = [r for r in per if {r["advex"], r["abcrown"]} == {"sat", "unsat"}]
    run.pop("stdout_tail", None)
    summary = {
        "instances": len(per),
        "timeout_s": args.timeout,
        "advex": count("advex"),
        "abcrown": count("abcrown"),
        "advex_decided_s_median": med("advex_s", "advex"),
        "abcrown_decided_s_median": med("abcrown_s", "abcrown"),
        "disagreements": clash,
        "abcrown_config": CONFIGS[args.config],
        "threads": args.threads,
    }
    print(f"{args.name}: advex {summary['advex']}, alpha-beta-CROWN {summary['abcrown']}, disagreements {len(clash)}")
    return {"advex_run": run, "summary": summary, "instances": per}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--abcrown", required=True, help="alpha-beta-CROWN's complete_verifier folder")
    ap.add_argument("--python", required=True, help="the Python of the environment alpha-beta-CROWN runs in")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--mnist", help="MODEL@EPS@I,J,...: zoo model, L-inf eps, MNIST test image indices")
    group.add_argument("--instances", help="a CSV of onnx,vnnlib,timeout lines")
    ap.add_argument("--config", choices=sorted(CONFIGS), required=True, help="alpha-beta-CROWN's settings")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per instance, both tools (default 60)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for alpha-beta-CROWN (default 2)")
    ap.add_argument("--name", default=None, help="the entry in the results (default: from the instances)")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "advex" / "bench_abcrown"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "abcrown.json"))
    args = ap.parse_args()
    if not (Path(args.abcrown) / "abcrown.py").is_file():
        sys.exit(f"--abcrown: {args.abcrown} holds no abcrown.py (give alpha-beta-CROWN's complete_verifier folder)")
    args.name = args.name or (args.mnist.split("@")[0] + "@" + args.mnist.split("@")[1] if args.mnist
                              else Path(args.instances).stem)  # fmt: skip
    run_sections({args.name: lambda: side_by_side(args)}, args.name, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
