"""advex verify on the verification competition's own instances (VNN-COMP 2021), beside what the
competition's tools answered on them:

    python benchmarks/bench_vnncomp.py --root VNNCOMP2021/benchmarks --results VNNCOMP2021_RESULTS/results_csv \\
        [--sets test,acasxu,mnistfc,eran,oval21] [--per-set 20] [--timeout 60]

``--root`` is the ``benchmarks`` folder of https://github.com/stanleybak/vnncomp2021 (each set: its
ONNX networks, VNNLIB properties and ``<set>_instances.csv``), ``--results`` the ``results_csv``
folder of https://github.com/stanleybak/vnncomp2021_results (every tool's answer per instance).
Neither is shipped with advex; nothing is downloaded here.

Instances whose network advex cannot read (an operator outside its set: ERAN's
sigmoid network) are counted and set aside, their operator named. For each set, ``--per-set`` instances
spread evenly over the rest of its instances CSV (all with 0) go to one
``advex verify --instances`` process (its wall time and peak RSS), with ``--timeout`` seconds each
(default: the competition's own per-instance limit). Every answer is compared with the
competition's: advex's unsat where a tool found sat (or sat where a tool proved unsat) is a
disagreement, listed by instance -- a soundness alarm for one side, which the counterexample
advex writes for its sat answers can settle. The competition ran its tools on other machines
(alpha-beta-CROWN on a GPU instance), so its times are shown for orientation only.

Writes benchmarks/results/vnncomp2021.json (each set replaces its own entry).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from _runs import advex, run_sections

ROOT = Path(__file__).resolve().parents[1]
SETS = "test,acasxu,mnistfc,eran,oval21"
ANSWER = {"holds": "unsat", "unsat": "unsat", "violated": "sat", "sat": "sat"}


def competition(results: Path) -> dict[tuple[str, str, str], dict[str, tuple[str, float]]]:
    """(set, onnx file name, vnnlib file name) -> tool -> (unsat / sat / other, seconds)."""
    out: dict = {}
    for f in sorted(results.glob("*.csv")):
        tool = f.stem
        for row in csv.reader(f.open()):
            if len(row) < 6:
                continue
            key = (row[0], Path(row[1]).name, Path(row[2]).name)
            try:
                t = float(row[5])
            except ValueError:
                t = float("nan")
            out.setdefault(key, {})[tool] = (ANSWER.get(row[4].strip().lower(), "other"), t)
    return out


def pick(lines: list[list[str]], n: int) -> list[list[str]]:
    if n <= 0 or n >= len(lines):
        return lines
    return [lines[round(i * (len(lines) - 1) / (n - 1))] for i in range(n)] if n > 1 else lines[:1]


def _unsupported(folder: Path, nets: set[str]) -> dict[str, str]:
    """The set's networks advex cannot read (an operator outside its set): name -> the error."""
    from advex.models import OnnxError, load_onnx

    bad = {}
    for net in sorted(nets):
        try:
            load_onnx(folder / net)
        except OnnxError as e:
            bad[net] = str(e).split(": ", 1)[-1]
    return bad


def one(name: str, args, work: Path, answers) -> dict:
    folder = Path(args.root) / name
    csvs = sorted(folder.glob("*instances.csv"))
    if not csvs:
        raise SystemExit(f"{folder} holds no *instances.csv")
    lines = [r for r in csv.reader(csvs[0].open()) if len(r) == 3]
    unsupported = _unsupported(folder, {net for net, _, _ in lines})
    chosen = pick([r for r in lines if r[0] not in unsupported], args.per_set)
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    inst = out / "instances.csv"
    with inst.open("w") as f:
        for net, prop, t in chosen:
            limit = args.timeout if args.timeout else float(t)
            f.write(f"{(folder / net).resolve()},{(folder / prop).resolve()},{limit:g}\n")
    run = advex("verify", "--instances", str(inst), "--out", str(out / "results"))
    rows = list(csv.DictReader((out / "results" / "results.csv").open()))
    per, disagree = [], []
    counts = {"unsat": 0, "sat": 0, "timeout": 0}
    theirs = {"unsat": 0, "sat": 0, "other": 0}
    for r, (net, prop, _) in zip(rows, chosen):
        key = (name, Path(net).name, Path(prop).name)
        tools = answers.get(key, {})
        ab = tools.get("a-b-CROWN", ("other", float("nan")))
        theirs[ab[0]] += 1
        counts[r["result"]] += 1
        found = {a for a, _ in tools.values() if a in ("sat", "unsat")}
        if r["result"] in ("sat", "unsat") and ({"sat", "unsat"} - {r["result"]}) & found:
            who = sorted(t for t, (a, _) in tools.items() if a in ("sat", "unsat") and a != r["result"])
            disagree.append({"onnx": Path(net).name, "vnnlib": Path(prop).name, "advex": r["result"], "tools": who})
        per.append({"onnx": Path(net).name, "vnnlib": Path(prop).name, "timeout_s": float(r["timeout_s"]),
                    "advex": r["result"], "advex_s": float(r["time_s"]), "domains": int(r["domains"]),
                    "alpha_beta_crown": ab[0], "alpha_beta_crown_s": ab[1],
                    "others_decided": sorted(found)})  # fmt: skip
    decided = [p["advex_s"] for p in per if p["advex"] != "timeout"]
    summary = {
        "set": name,
        "instances": len(per),
        "of": len(lines),
        "unsupported": {"instances": sum(r[0] in unsupported for r in lines), "networks": unsupported},
        "timeout_s": args.timeout or "the competition's",
        "advex": counts,
        "alpha_beta_crown_2021": theirs,
        "disagreements": disagree,
        "advex_decided_s_median": round(statistics.median(decided), 2) if decided else None,
        "advex_decided_s_max": round(max(decided), 2) if decided else None,
    }
    run.pop("stdout_tail", None)
    run.update(summary=summary, instances=per)
    skipped = f", {summary['unsupported']['instances']} of {len(lines)} unsupported" if unsupported else ""
    print(f"{name}: advex {counts}{skipped}, alpha-beta-CROWN (2021) {theirs}, disagreements {len(disagree)} "
          f"({run['wall_s']} s, {run['peak_rss_mb']} MB)", flush=True)  # fmt: skip
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="vnncomp2021's benchmarks folder")
    ap.add_argument("--results", required=True, help="vnncomp2021_results' results_csv folder")
    ap.add_argument("--sets", default=SETS, help=f"comma-separated (default {SETS})")
    ap.add_argument("--per-set", type=int, default=20, help="instances per set, spread evenly (0: all)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per instance (default: the competition's)")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "advex" / "bench_vnncomp"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vnncomp2021.json"))
    args = ap.parse_args()
    answers = competition(Path(args.results))
    work = Path(args.work)
    sections = {s: (lambda s=s: one(s, args, work, answers)) for s in args.sets.split(",")}
    run_sections(sections, args.sets, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
