"""The peer benchmarks on an old commit and on the working tree, side by side, in one run (issue 14).

    python benchmarks/compare_commits.py                        # all four, documented sizes, old = 8354157
    python benchmarks/compare_commits.py --smoke                # tiny sizes: checks the plumbing in minutes
    python benchmarks/compare_commits.py --only certify,patch --repeats 3 --peers-once
    python benchmarks/compare_commits.py --dry-run              # print the commands only

For every selected case (a documented command of bench_peers.py, bench_onepixel_peers.py,
bench_patch_peers.py or bench_certify_peers.py; see ``CASES``) the script runs in the peers'
virtual environment (``--python``, default /work/peers-venv/bin/python; it must NOT have advex
installed) twice, back to back:

- old: the script AND the source of ``--old`` (default 8354157, the commit before the redesign),
  from a temporary ``git worktree add --detach`` under /tmp, with PYTHONPATH=<old worktree>/src;
- new: the script and the source of this checkout's working tree, PYTHONPATH=<repo>/src.

With ``--repeats N`` the pairs alternate (old, new, new, old, ...). Both sides get the same
environment: OMP_NUM_THREADS/MKL_NUM_THREADS (and ``--threads`` for the scripts that set the torch
thread count themselves) equal to the case's documented thread count or ``--threads``, the same
ADVEX_DATA, PYTHONHASHSEED=0. Each run's JSON goes to ``<out stem>/<case>.<side>.r<k>.json`` (passed
as ``--out``; bench_peers.py has no ``--out``: its file is copied out of the tree's
benchmarks/results/peers.json, and the working tree's committed file is put back unless
``--update-results``), its output to the ``.log`` beside it. The old worktree is removed at the end
whatever happens.

The table (the key numbers printed, every number written to ``--out``, default
benchmarks/results/compare_commits.json or compare_commits_smoke.json) has one line per case,
item and number: old, new, new/old and a check -- ``same``/``DIFF`` for numbers that must not
change (success rates, robust accuracy, L2, bounds, certified counts, queries),
``~``/``SLOWER``/``faster`` for times (``--slow-tol``, default 10%), nothing for derived
speed-ups. Peers' rows are measured in both runs: the control for machine drift. Times are
medians over the repeats; numbers are checked to agree across them. The summary at the end
lists every number that changed, printed or not.

``--smoke`` shrinks every case (see ``SMOKE``) and runs one torch thread unless ``--threads``.
bench_peers.py has no size options, so in smoke mode only it is started through a small shim
that caps ``load_dataset(...).subset(n)`` at 32 images and ``sample_photos()`` at one photo
before running the unchanged script (the full run does not use the shim). ``--peers-once``
applies only to bench_onepixel_peers.py (``--skip-torchattacks --skip-art`` on all but the first
new run); the other three scripts have no flag to skip their peers. ``--args CASE=ARGS`` (or
``BENCH=ARGS``) appends options to a case's command line (the scripts' argparse keeps the last
value), e.g. ``--args onepixel="--n 20"``.

Standard library only. Exit status: 0 if every run finished, 1 if one failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OLD = "8354157"
DEFAULT_PYTHON = "/work/peers-venv/bin/python"

# bench name -> (script, peer distributions it imports, whether it takes --threads)
BENCHES = {
    "peers": ("bench_peers.py", ["torchattacks", "foolbox", "adversarial-robustness-toolbox"], False),
    "onepixel": ("bench_onepixel_peers.py", ["torchattacks", "adversarial-robustness-toolbox"], False),
    "patch": ("bench_patch_peers.py", ["adversarial-robustness-toolbox"], True),
    "certify": ("bench_certify_peers.py", ["convex-adversarial"], True),
}

# case -> (bench, the documented options (docs/benchmarks.md), documented torch threads, result file)
CASES = {
    "peers": ("peers", [], 2, "peers.json"),
    "onepixel": ("onepixel", ["--n", "100"], 2, "onepixel_peers.json"),
    "onepixel-targeted": ("onepixel", ["--n", "50", "--targeted"], 2, "onepixel_peers_targeted.json"),
    "onepixel-3px": ("onepixel", ["--n", "50", "--pixels", "3"], 2, "onepixel_peers_3px.json"),
    "patch-cifar10": ("patch", [], 1, "patch_peers.json"),
    "patch-efficientnet": (
        "patch",
        ["--model", "efficientnet-lite0", "--n", "16", "--steps", "10", "--eval-n", "100", "--target", "9"],
        1,
        "patch_peers.json",
    ),
    "certify": (
        "certify",
        ["--models", "mnist-small-ibp-0.1", "mnist-small-pgd", "mnist-small", "--eps", "0.1", "--n", "100"]
        + ["--batch", "100"],
        1,
        "certify_peers.json",
    ),
}

# tiny sizes, appended after the documented options (argparse keeps the last value)
SMOKE = {
    "onepixel": ["--n", "3", "--iterations", "5"],
    "onepixel-targeted": ["--n", "3", "--iterations", "5"],
    "onepixel-3px": ["--n", "3", "--iterations", "5"],
    "patch-cifar10": ["--n", "16", "--steps", "3", "--eval-n", "32"],
    "patch-efficientnet": ["--n", "2", "--steps", "2", "--eval-n", "4"],
    "certify": ["--n", "10", "--batch", "10"],
}
SMOKE_PEERS_N = 32
SMOKE_THREADS = 1  # a smoke run shares the CPUs; two OpenMP threads on a loaded machine crawl

# compared and kept in the JSON, not printed (the summary still lists any of them that changed)
QUIET = {
    "onepixel": {
        "time_s",
        "reported_time_s",
        "population_real",
        "popsize_arg",
        "iterations",
        "max_queries",
        "counted_queries_per_image",
        "reported_success_rate",
        "n_success",
    },
}

# bench_peers.py at smoke size: the unchanged script, run after capping the data it loads
SMOKE_SHIM = """\
import os, runpy, sys
n = int(os.environ["ADVEX_COMPARE_SMOKE_N"])
script = sys.argv[1]
capped = []
try:
    import advex.data.datasets as _ds

    class _Capped:
        def __init__(self, d):
            self._d = d

        def __getattr__(self, k):
            return getattr(self._d, k)

        def subset(self, m):
            return self._d.subset(m if m is None else min(m, n))

    _load = _ds.load_dataset
    _ds.load_dataset = lambda *a, **k: _Capped(_load(*a, **k))
    capped.append(f"load_dataset(...).subset(<= {n})")
except (ImportError, AttributeError) as e:
    print(f"smoke shim: dataset not capped ({e!r})", flush=True)
try:
    import advex.data as _data

    _photos = _data.sample_photos
    _data.sample_photos = lambda *a, **k: _photos(*a, **k)[:1]
    capped.append("sample_photos()[:1]")
except (ImportError, AttributeError) as e:
    print(f"smoke shim: photos not capped ({e!r})", flush=True)
print("smoke shim:", ", ".join(capped) or "nothing capped", flush=True)
sys.argv = [script, *sys.argv[2:]]
runpy.run_path(script, run_name="__main__")
"""

PEER_TOKENS = {"torchattacks", "foolbox", "art", "convex"}


class Fail(Exception):
    """A one-line reason to stop before running anything."""


def git(*args: str, check: bool = True) -> str:
    p = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise Fail(f"git {' '.join(args)} failed: {(p.stderr.strip() or p.stdout.strip()).splitlines()[-1:]}")
    return p.stdout.strip()


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="cases: " + ", ".join(CASES), allow_abbrev=False
    )
    ap.add_argument("--old", default=DEFAULT_OLD, help=f"old git revision (default {DEFAULT_OLD})")
    ap.add_argument("--python", default=DEFAULT_PYTHON, help=f"the peers' venv python (default {DEFAULT_PYTHON})")
    ap.add_argument(
        "--only",
        default=",".join(BENCHES),
        help="comma-separated benches (peers, onepixel, patch, certify) or cases (default: all)",
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the plumbing")
    ap.add_argument("--repeats", type=int, default=1, help="old/new pairs per case, alternating order")
    ap.add_argument("--peers-once", action="store_true", help="peers only in the first new run (onepixel only)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for every case (default: as documented)")
    ap.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="CASE=ARGS",
        help="extra options for a case or a bench, e.g. onepixel='--n 20' (repeatable)",
    )
    ap.add_argument("--data-dir", default=None, help="datasets folder (default: $ADVEX_DATA or ../shared/datasets)")
    ap.add_argument(
        "--out", type=Path, default=None, help="summary JSON (default benchmarks/results/compare_commits.json)"
    )
    ap.add_argument("--slow-tol", type=float, default=0.10, help="new/old time above 1 + this is SLOWER (default 0.10)")
    ap.add_argument("--timeout", type=float, default=0, help="seconds per run before it is killed (0: none)")
    ap.add_argument(
        "--update-results",
        action="store_true",
        help="leave the new run's JSON in benchmarks/results/ (the documented files) for committing",
    )
    ap.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    ap.add_argument("-v", "--verbose", action="store_true", help="stream every run's output")
    a = ap.parse_args(argv)
    a.argv = sys.argv[1:] if argv is None else list(argv)
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    if a.threads is not None and a.threads < 1:
        ap.error("--threads must be >= 1")
    sel: list[str] = []
    for tok in filter(None, (t.strip() for t in a.only.split(","))):
        if tok in BENCHES:
            sel += [c for c, v in CASES.items() if v[0] == tok and c not in sel]
        elif tok in CASES:
            sel += [tok] if tok not in sel else []
        else:
            ap.error(f"--only: unknown {tok!r} (benches: {', '.join(BENCHES)}; cases: {', '.join(CASES)})")
    if not sel:
        ap.error("--only selects nothing")
    a.cases = [c for c in CASES if c in sel]
    extra: dict[str, list[str]] = {}
    for item in a.args:
        key, sep, val = item.partition("=")
        if not sep or (key not in CASES and key not in BENCHES):
            ap.error(f"--args {item!r}: expected CASE=ARGS or BENCH=ARGS")
        extra[key] = extra.get(key, []) + shlex.split(val)
    a.extra = extra
    if a.out is None:
        a.out = REPO / "benchmarks" / "results" / ("compare_commits_smoke.json" if a.smoke else "compare_commits.json")
    return a


def case_args(a, case: str, threads: int) -> list[str]:
    bench, args, _, _ = CASES[case]
    out = list(args)
    if a.smoke:
        out += SMOKE.get(case, [])
    if BENCHES[bench][2]:
        out += ["--threads", str(threads)]
    return out + a.extra.get(bench, []) + (a.extra.get(case, []) if case != bench else [])


def data_dir(a) -> str | None:
    if a.data_dir:
        return str(Path(a.data_dir).resolve())
    if os.environ.get("ADVEX_DATA"):
        return os.environ["ADVEX_DATA"]
    d = REPO.parent / "shared" / "datasets"
    return str(d) if d.is_dir() else None


def run_env(a, tree: Path, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        PYTHONPATH=str(tree / "src"),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        ADVEX_COMPARE_SMOKE_N=str(SMOKE_PEERS_N),
    )
    dd = data_dir(a)
    if dd:
        env["ADVEX_DATA"] = dd
    return env


def check_python(a) -> dict:
    """The peers' venv exists and has what the selected benches import; their versions."""
    py = Path(a.python)
    if not (py.is_file() and os.access(py, os.X_OK)):
        raise Fail(
            f"peers venv python {a.python} not found: build it as bench_peers.py's docstring says, or give --python"
        )
    need = sorted({"torch", "numpy", "scipy"} | {d for c in a.cases for d in BENCHES[CASES[c][0]][1]})
    code = (
        "import json, sys\nfrom importlib.metadata import version, PackageNotFoundError\nout = {}\n"
        "for n in sys.argv[1:]:\n    try:\n        out[n] = version(n)\n    except PackageNotFoundError:\n"
        "        out[n] = None\ntry:\n    import advex\n    out['advex (installed!)'] = advex.__file__\n"
        "except ImportError:\n    pass\nprint(json.dumps(out))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([str(py), "-c", code, *need], capture_output=True, text=True, env=env, cwd="/")
    if p.returncode != 0:
        raise Fail(f"peers venv python {a.python} does not run: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    vers = json.loads(p.stdout)
    missing = [n for n in need if vers.get(n) is None]
    if missing:
        raise Fail(f"peers venv {a.python} lacks {', '.join(missing)} (see bench_peers.py's docstring)")
    if "advex (installed!)" in vers:
        raise Fail(
            f"advex is installed in the peers venv ({vers['advex (installed!)']}); uninstall it: "
            "the old/new source is chosen by PYTHONPATH"
        )
    return vers


def resolve_old(rev: str) -> dict:
    p = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0 or not p.stdout.strip():
        raise Fail(f"revision {rev!r} not found in {REPO}")
    full = p.stdout.strip()
    return {"rev": rev, "commit": full, "subject": git("log", "-1", "--format=%h %s", full)[:200]}


def new_info() -> dict:
    status = git("status", "--porcelain", "--", "src", "benchmarks").splitlines()
    return {
        "tree": str(REPO),
        "head": git("rev-parse", "HEAD"),
        "head_subject": git("log", "-1", "--format=%h %s")[:200],
        "uncommitted_in_src_or_benchmarks": [s for s in status if not s[3:].startswith("benchmarks/results/")],
    }


def traceback_summary(log_text: str, script: str) -> str:
    """'script line N: source -> exception' from the last traceback in a run's output."""
    lines = log_text.rstrip().splitlines()
    start = max((i for i, s in enumerate(lines) if s.startswith("Traceback")), default=None)
    if start is None:
        return (lines[-1] if lines else "no output")[:300]
    tb = lines[start:]
    exc = next((s for s in reversed(tb) if s and not s.startswith(" ")), tb[-1])
    frames = []
    for i, s in enumerate(tb):
        m = re.match(r'\s*File "(.+?)", line (\d+)', s)
        if m:
            src = tb[i + 1].strip() if i + 1 < len(tb) and not tb[i + 1].lstrip().startswith("File") else ""
            frames.append((m.group(1), m.group(2), src))
    where = ""
    mine = [f for f in frames if Path(f[0]).name == script]
    if mine:
        where = f"{script} line {mine[-1][1]}: {mine[-1][2]}"
        if frames[-1] != mine[-1]:
            where += f" (raised in {Path(frames[-1][0]).name} line {frames[-1][1]})"
    elif frames:
        where = f"{frames[-1][0]} line {frames[-1][1]}: {frames[-1][2]}"
    return f"{where} -> {exc}"[:500] if where else exc[:300]


def run_one(a, cmd: list[str], env: dict, cwd: Path, log: Path) -> tuple[int, float, bool]:
    """Run ``cmd``; its output to ``log`` (and the console with -v). Return code, wall time, timed out."""
    t0 = time.perf_counter()
    timed_out = threading.Event()
    with log.open("w") as f:
        f.write(f"# cwd {cwd}\n# PYTHONPATH={env['PYTHONPATH']} OMP_NUM_THREADS={env['OMP_NUM_THREADS']}\n")
        f.write(f"# {shlex.join(cmd)}\n")
        f.flush()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timer = None
        if a.timeout > 0:

            def kill():
                timed_out.set()
                p.kill()

            timer = threading.Timer(a.timeout, kill)
            timer.start()
        try:
            for line in p.stdout:
                f.write(line)
                f.flush()  # so that the log can be followed while the run goes on
                if a.verbose:
                    print(f"    | {line}", end="", flush=True)
            rc = p.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if p.poll() is None:
                p.kill()
                p.wait()
    return rc, time.perf_counter() - t0, timed_out.is_set()


# ----------------------------------------------------------------------------- the numbers of each JSON


def _flatten(d, prefix=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flatten(v, (*prefix, str(k)))
    elif isinstance(d, (bool, int, float)) or d is None or (isinstance(d, str) and prefix[-1:] == ("error",)):
        yield prefix, d
    elif isinstance(d, list) and all(isinstance(v, (int, float)) for v in d):
        yield prefix, d


def extract(bench: str, d: dict) -> list[tuple[str, str, object]]:
    """(item, metric, value) for every number a bench's JSON holds that says something about the result."""
    rows = []
    if bench == "peers":
        for path, v in _flatten(d):
            if path[-1] in ("runs", "runs_s", "threads", "n", "eps", "batch"):
                continue
            if len(path) == 1:
                rows.append(("model", path[0], v))
            elif len(path) == 2:
                label = {"pgd_step_vs_floor": "PGD step vs floor (cifar10)"}.get(path[0], path[0])
                label = {"pgd_step_vs_floor_efficientnet": "PGD step vs floor (efficientnet)"}.get(path[0], label)
                rows.append((label, path[1], v))
            else:
                rows.append((f"{path[0]}: {'/'.join(path[1:-1])}", path[-1], v))
    elif bench == "onepixel":
        s = d.get("settings", {})
        rows += [
            ("images", "image_indices", s.get("image_indices")),
            ("model", "clean_acc", s.get("clean_acc_first_10000")),
        ]
        for lib, m in d.get("libraries", {}).items():
            rows += [(lib, "/".join(p), v) for p, v in _flatten(m)]
        rows += [("ratios", k, v) for k, v in d.get("ratios", {}).items()]
    elif bench == "patch":
        for model, r in d.items():
            for lib, m in r.get("results", {}).items():
                if isinstance(m, dict):
                    rows += [(f"{model}: {lib}", "/".join(p), v) for p, v in _flatten(m)]
                else:
                    rows.append((model, lib, m))
    elif bench == "certify":
        for r in d.get("rows", []):
            item = f"{r.get('model')} eps={r.get('eps')}"
            rows += [(item, k, v) for k, v in r.items() if k not in ("model", "eps", "images")]
    return rows


def kind_of(metric: str) -> str:
    m = metric.lower()
    if "speedup" in m or "ratio" in m.split("_") or "_over_" in m:
        return "ratio"
    if "time" in m or m.endswith("_s") or m.endswith("_s_per_step") or m.endswith("_s_repeat"):
        return "time"
    return "value"


def is_peer(item: str, metric: str) -> bool:
    """A peer's number (measured in both runs: the control for drift), not advex's nor a ratio of the two."""
    m = metric.lower()
    if item.lower().startswith("advex") or "advex" in m or "speedup" in m:
        return False
    return bool(set(re.split(r"[^a-z0-9]+", f"{item} {metric}".lower())) & PEER_TOKENS)


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, list):
        return f"[{len(v)}]"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if v == 0:
            return "0"
        if 1e-3 <= abs(v) < 1e5:
            return f"{v:.4f}".rstrip("0").rstrip(".")
        return f"{v:.3g}"
    return str(v)


def combine(vals: list, kind: str):
    """One value per side: the median of times/ratios over repeats; numbers must agree (else 'varies')."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, False
    if kind in ("time", "ratio") and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return statistics.median(vals), False
    return vals[0], any(v != vals[0] for v in vals)


def compare(a, case: str, runs: list[dict]) -> list[dict]:
    bench = CASES[case][0]
    per: dict[tuple[str, str], dict[str, list]] = {}
    order: list[tuple[str, str]] = []
    for r in runs:
        if r.get("data") is None:
            continue
        for item, metric, v in extract(bench, r["data"]):
            key = (item, metric)
            if key not in per:
                per[key] = {"old": [], "new": []}
                order.append(key)
            per[key][r["side"]].append(v)
    rows = []
    for item, metric in order:
        kind = kind_of(metric)
        old, old_var = combine(per[(item, metric)]["old"], kind)
        new, new_var = combine(per[(item, metric)]["new"], kind)
        ratio = None
        num = (int, float)
        if isinstance(old, num) and isinstance(new, num) and not isinstance(old, bool) and old != 0:
            ratio = new / old
        check = ""
        if old is None or new is None:
            check = ""
        elif kind == "time" and ratio is not None:
            check = "SLOWER" if ratio > 1 + a.slow_tol else ("faster" if ratio < 1 - a.slow_tol else "~")
        elif kind == "value":
            check = "same" if old == new else "DIFF"
        if old_var or new_var:
            check = (check + " varies").strip()
        rows.append(
            {
                "item": item,
                "metric": metric,
                "kind": kind,
                "peer": is_peer(item, metric),
                "old": old,
                "new": new,
                "new_over_old": None if ratio is None else round(ratio, 4),
                "check": check,
                "old_runs": per[(item, metric)]["old"],
                "new_runs": per[(item, metric)]["new"],
            }
        )
    # advex's rows first, then the peers' (the drift control), each in the JSON's order
    return [r for r in rows if not r["peer"]] + [r for r in rows if r["peer"]]


def print_table(case: str, info: dict) -> None:
    rows = info["rows"]
    print(f"\n== {case}: {info['script']} {shlex.join(info['args'])}  (threads {info['threads']})")
    for r in info["runs"]:
        if r["rc"] != 0:
            print(f"   {r['side']} run r{r['repeat']} FAILED (rc {r['rc']}): {r.get('error', '')}")
    quiet = QUIET.get(CASES[case][0], set())
    rows = [r for r in rows if r["metric"] not in quiet and "_queries_over_" not in r["metric"]]
    if not rows:
        return
    head = ("item", "metric", "old", "new", "new/old", "check")
    body = [
        (
            ("[peer] " if r["peer"] else "") + r["item"],
            r["metric"],
            fmt(r["old"]),
            fmt(r["new"]),
            "" if r["new_over_old"] is None else f"{r['new_over_old']:.3f}",
            r["check"],
        )
        for r in rows
    ]
    w = [max(len(x[i]) for x in [head, *body]) for i in range(6)]
    for x in [head, *body]:
        cells = [x[0].ljust(w[0]), x[1].ljust(w[1]), *(x[i].rjust(w[i]) for i in (2, 3, 4)), x[5]]
        print("   " + "  ".join(cells).rstrip())


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        old = resolve_old(a.old)
        vers = check_python(a)
    except Fail as e:
        print(f"compare_commits: {e}", file=sys.stderr)
        return 2
    raw_dir = a.out.with_suffix("")
    plan = []
    for case in a.cases:
        bench = CASES[case][0]
        threads = a.threads or (SMOKE_THREADS if a.smoke else CASES[case][2])
        plan.append((case, bench, BENCHES[bench][0], case_args(a, case, threads), threads))
    notes = []
    if a.peers_once:
        notes.append(
            "--peers-once: only bench_onepixel_peers.py can skip its peers (--skip-torchattacks --skip-art); "
            "bench_peers.py, bench_patch_peers.py and bench_certify_peers.py have no such flag and run them every time"
        )
    if a.smoke and "peers" in a.cases:
        notes.append(
            f"--smoke: bench_peers.py has no size options; it runs through a shim capping its data at "
            f"{SMOKE_PEERS_N} CIFAR-10 images and 1 photo (x4 flips), the rest of the script unchanged"
        )
    print(f"old: {old['subject']} ({old['commit'][:12]}); new: working tree of {REPO}")
    print(f"python: {a.python} ({', '.join(f'{k} {v}' for k, v in vers.items())})")
    load = os.getloadavg()[0]
    if load > 1.0:
        notes.append(
            f"load average {load:.1f} at the start on {os.cpu_count()} CPUs: other jobs share the machine, "
            "so times are noise (two OpenMP threads on a busy machine can run many times slower)"
        )
    for n in notes:
        print(f"note: {n}")
    if a.dry_run:
        for case, bench, script, args, threads in plan:
            out = "(writes benchmarks/results/peers.json)" if bench == "peers" else "--out ..."
            shim = " (through the smoke shim)" if a.smoke and bench == "peers" else ""
            print(f"{case}: OMP_NUM_THREADS={threads} {a.python} benchmarks/{script} {shlex.join(args)} {out}{shim}")
        return 0

    raw_dir.mkdir(parents=True, exist_ok=True)
    try:
        results, failed, wall = run_all(a, old, plan, raw_dir)
    except Fail as e:
        print(f"compare_commits: {e}", file=sys.stderr)
        return 2
    report(a, old, vers, notes, results, raw_dir, wall)
    return 1 if failed else 0


def run_all(a, old: dict, plan: list, raw_dir: Path) -> tuple[dict, bool, float]:
    """Every case, old and new back to back; the old tree a temporary worktree, always removed."""
    tmp = Path(tempfile.mkdtemp(prefix="advex-compare-", dir="/tmp"))
    wt = tmp / "old"
    results: dict = {}
    failed = False
    t_start = time.perf_counter()
    try:
        git("worktree", "add", "--detach", str(wt), old["commit"])
        trees = {"old": wt, "new": REPO}
        for case, bench, script, args, threads in plan:
            runs = []
            results[case] = {"script": script, "args": args, "threads": threads, "runs": runs}
            first_new = True
            for k in range(a.repeats):
                for side in ("old", "new") if k % 2 == 0 else ("new", "old"):
                    tree = trees[side]
                    tag = f"{case}.{side}.r{k}"
                    out_json, log = raw_dir / f"{tag}.json", raw_dir / f"{tag}.log"
                    out_json.unlink(missing_ok=True)
                    script_path = tree / "benchmarks" / script
                    cmd_args = list(args)
                    if a.peers_once and bench == "onepixel" and not (side == "new" and first_new):
                        cmd_args += ["--skip-torchattacks", "--skip-art"]
                    rec = {"side": side, "repeat": k, "log": str(log), "json": str(out_json)}
                    if not script_path.is_file():
                        rec.update(rc=-1, error=f"{script} does not exist in the {side} tree")
                        runs.append(rec)
                        failed = True
                        print(f"{tag}: {rec['error']}")
                        continue
                    env = run_env(a, tree, threads)
                    if bench == "peers":  # no --out: it writes its tree's benchmarks/results/peers.json
                        pre = [script_path] if not a.smoke else ["-c", SMOKE_SHIM, script_path]
                        cmd = [a.python, *map(str, pre), *cmd_args]
                    else:
                        cmd = [a.python, str(script_path), *cmd_args, "--out", str(out_json)]
                    print(f"{tag}: running ({side}: {tree}) ...", flush=True)
                    load0 = os.getloadavg()[0]
                    peers_file = tree / "benchmarks" / "results" / "peers.json"
                    saved = peers_file.read_bytes() if bench == "peers" and peers_file.exists() else None
                    stamp = peers_file.stat().st_mtime_ns if saved is not None else None
                    try:
                        rc, wall, timed_out = run_one(a, cmd, env, tree, log)
                    finally:
                        if bench == "peers" and peers_file.exists() and peers_file.stat().st_mtime_ns != stamp:
                            shutil.copyfile(peers_file, out_json)
                            keep = side == "new" and a.update_results and not a.smoke and rc == 0
                            if saved is not None and not keep:  # the committed file stays as it was
                                peers_file.write_bytes(saved)
                    rec.update(
                        rc=rc,
                        wall_s=round(wall, 1),
                        loadavg_1min=[round(load0, 2), round(os.getloadavg()[0], 2)],
                        command=shlex.join(
                            [Path(cmd[0]).name] + ["<smoke shim>" if c == SMOKE_SHIM else c for c in cmd[1:]]
                        ),
                    )
                    if rc == 0 and out_json.exists():
                        try:
                            rec["data"] = json.loads(out_json.read_text())
                        except json.JSONDecodeError as e:
                            rec.update(rc=-1, error=f"bad JSON in {out_json}: {e}")
                    elif rc == 0:
                        rec.update(rc=-1, error=f"no JSON written ({out_json.name})")
                    else:
                        rec["error"] = ("timed out; " if timed_out else "") + traceback_summary(
                            log.read_text(errors="replace"), script
                        )
                    if rec["rc"] != 0:
                        failed = True
                    if side == "new":
                        first_new = False
                    status = "ok" if rec["rc"] == 0 else f"FAILED: {rec['error']}"
                    print(f"{tag}: {wall:.1f} s, {status}", flush=True)
                    runs.append(rec)
            results[case]["rows"] = compare(a, case, runs)
            if a.update_results and not a.smoke:
                update_results(case, runs)
    finally:
        p = subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(wt)], capture_output=True, text=True
        )
        if p.returncode != 0 and wt.exists():
            print(f"warning: could not remove worktree {wt}: {p.stderr.strip()}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    return results, failed, time.perf_counter() - t_start


def report(a, old: dict, vers: dict, notes: list, results: dict, raw_dir: Path, wall: float) -> None:
    """The side-by-side tables and the summary, printed and written to ``a.out``."""
    for case, info in results.items():
        print_table(case, info)
    summary = {"failed_runs": [], "slower": [], "diff": []}
    for case, info in results.items():
        summary["failed_runs"] += [
            f"{case} {r['side']} r{r['repeat']}: {r.get('error')}" for r in info["runs"] if r["rc"]
        ]
        for r in info["rows"]:
            tag = f"{case}: {'[peer] ' if r['peer'] else ''}{r['item']} {r['metric']}"
            if r["check"].startswith("SLOWER"):
                summary["slower"].append(f"{tag} x{r['new_over_old']:.3f}")
            if "DIFF" in r["check"] or "varies" in r["check"]:
                summary["diff"].append(f"{tag}: {fmt(r['old'])} -> {fmt(r['new'])}")
    print(f"\nwall time {wall:.0f} s; raw JSON and logs in {raw_dir}")
    print(f"failed runs: {len(summary['failed_runs'])}")
    for s in summary["failed_runs"]:
        print(f"  {s}")
    print(f"numbers that changed (advex and peers): {len(summary['diff'])}")
    for s in summary["diff"]:
        print(f"  {s}")
    print(
        f"times more than {a.slow_tol:.0%} slower (peers' rows are the machine-drift control): {len(summary['slower'])}"
    )
    for s in summary["slower"]:
        print(f"  {s}")

    for info in results.values():
        for r in info["runs"]:
            r.pop("data", None)
    doc = {
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/compare_commits.py", *a.argv]),
        "smoke": a.smoke,
        "wall_s": round(wall),
        "repeats": a.repeats,
        "peers_once": a.peers_once,
        "slow_tol": a.slow_tol,
        "old": old,
        "new": new_info(),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "peers_venv": a.python,
            "versions": vers,
        },
        "notes": notes,
        "summary": summary,
        "cases": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {a.out}")


def update_results(case: str, runs: list[dict]) -> None:
    """The last successful new run's JSON into the documented file (patch_peers.json is keyed by model)."""
    bench, _, _, name = CASES[case]
    new = [r for r in runs if r["side"] == "new" and r["rc"] == 0 and r.get("data") is not None]
    if not new or bench == "peers":  # bench_peers.py already wrote it in place
        return
    dest = REPO / "benchmarks" / "results" / name
    data = new[-1]["data"]
    if bench == "patch" and dest.exists():
        data = {**json.loads(dest.read_text()), **data}
    dest.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
