"""Every bad input of tests/bad_inputs.py (and the library's bad labels, outputs and pixels),
tried on an old commit and on this working tree side by side: exit status, the lines printed
on stderr, and what was left on disk. Writes docs/bad-inputs.md (the before/after table of the
front-door issue) and a JSON of the raw results.

    python benchmarks/bad_inputs.py [--old 8354157] [--timeout 20] [--memory-gb 10]

Each checkout runs in its own process (PYTHONPATH=<checkout>/src) that walks every case in
turn: ``advex.cli.main(argv)`` with stderr captured, a case still working after ``--timeout``
seconds is stopped and recorded as such, and the process's address space is capped at
``--memory-gb`` so that an input that would take all the memory is recorded, not suffered.
The files the cases name are made once, by this checkout's tests/bad_inputs.prepare.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# Library cases: code run with ``tmp`` and the checkout's advex; an AdvexError is the answer
# wanted, anything else (a raw exception, a silent result, a warning missing) is recorded.
LIBRARY = {
    **{
        f"library:{name}-label-{label}": f"""
from torch import nn
import torch
from advex.attacks import {name}
torch.manual_seed(0)
net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
x = torch.rand(6, 3, 8, 8)
y = torch.zeros(6, dtype=torch.long); y[2] = {label}
r = {name}({kw})(net, x, y)
linf = (r.x_adv - x).abs().flatten(1).amax(1).mean()
print(f"returned: success {{r.success.float().mean():.2f}}, mean L-inf {{linf:.3g}}")
"""
        for name, kw in [
            ("PGD", "eps=0.1, steps=2"),
            ("APGD", "eps=0.1, steps=2"),
            ("Square", "eps=0.1, queries=5"),
            ("DeepFool", "steps=2"),
            ("CW", "steps=2"),
            ("OnePixel", "population=8, iterations=1"),
        ]
        for label in (4, -1)
    },
    "library:evaluate-label-4": """
from torch import nn
import torch
from advex.evaluation import evaluate
torch.manual_seed(0)
net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
ev = evaluate(net, torch.rand(6, 3, 8, 8), torch.full((6,), 4), [0.1], attacks=["fgsm"])
print(f"returned: clean accuracy {ev.clean_acc:.2f}")
""",
    **{
        f"library:model-returns-{kind}": f"""
from torch import nn
import torch
from advex.attacks import PGD
class Net(nn.Module):
    def __init__(self):
        super().__init__(); self.fc = nn.Linear(3 * 8 * 8, 4)
    def forward(self, x):
        z = self.fc(x.flatten(1))
        return {expr}
PGD(eps=0.1, steps=2)(Net(), torch.rand(6, 3, 8, 8))
print("returned")
"""
        for kind, expr in [("shape-N", "z[:, 0]"), ("tuple", "(z, z)")]
    },
    "library:pixel-1+1e-7": """
from torch import nn
import torch
from advex.attacks import PGD
x = torch.rand(6, 3, 8, 8); x[0, 0, 0, 0] = 1 + 1e-7
PGD(eps=0.1, steps=2)(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), x)
print("returned")
""",
    **{
        f"library:{name}-eps-8-warns": f"""
import warnings
from advex.attacks import {name}
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    {name}(eps=8)
print("warned: " + str(w[0].message) if w else "no warning")
"""
        for name in ("APGD", "Square")
    },
}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _left(before: dict, after: dict) -> str:
    new = sorted(k for k in after if k not in before)
    changed = sorted(k for k in after if k in before and after[k] != before[k] and not Path(k).suffix == "")
    tops = sorted({k.split("/")[0] for k in new})
    parts = [f"{t}/ ({sum(1 for k in new if k.startswith(t + '/'))} files)" if any(k.startswith(t + "/") for k in new)
             else t for t in tops]  # fmt: skip
    parts += [f"{k} changed" for k in changed]
    return "; ".join(parts) or "nothing"


class _Timeout(Exception):
    pass


def worker(tmp: Path, out: Path, timeout: int, memory_gb: float) -> None:
    """Run every case against the advex on sys.path; write the results to ``out``."""
    import resource
    import signal
    import traceback

    from bad_inputs import CASES, argv

    resource.setrlimit(resource.RLIMIT_AS, (int(memory_gb * 2**30), resource.RLIM_INFINITY))

    def alarm(*_):
        raise _Timeout

    signal.signal(signal.SIGALRM, alarm)
    from advex.cli import main

    results = {}
    jobs = [(c.id, "cli", argv(c, tmp)) for c in CASES] + [(k, "lib", code) for k, code in LIBRARY.items()]
    for cid, kind, what in jobs:
        err, std = io.StringIO(), io.StringIO()
        before = _tree(tmp)
        rc, t0 = None, time.perf_counter()
        signal.alarm(timeout)
        try:
            with redirect_stderr(err), redirect_stdout(std):
                if kind == "cli":
                    rc = main(what)
                else:
                    exec(compile(what, cid, "exec"), {"tmp": tmp})
                    rc = 0
        except SystemExit as e:
            rc = e.code
        except _Timeout:
            rc = f"still working after {timeout} s (stopped)"
        except MemoryError:
            rc = f"MemoryError (address space capped at {memory_gb:g} GB)"
        except BaseException as e:  # noqa: BLE001 - recording what the user would see
            kind_ = type(e).__name__
            if kind_ == "AdvexError" or type(e).__module__.startswith("advex"):
                rc, msg = "AdvexError", str(e).splitlines()[0] if str(e) else ""
                err.write(f"{kind_}: {msg}\n")
            else:
                rc = f"traceback ({kind_})"
                err.write(traceback.format_exc())
        finally:
            signal.alarm(0)
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        stdout = [ln for ln in std.getvalue().splitlines() if ln.strip()]
        if kind == "lib" and stdout:
            lines = lines + [f"(stdout) {stdout[-1]}"]
        last = next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else "")
        results[cid] = {
            "rc": rc,
            "stderr_lines": len(lines),
            "line": last,
            "left": _left(before, _tree(tmp)),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        for name in ("out", "code-ran"):  # leave the folder as the next case expects it
            p = tmp / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.write_text(json.dumps(results, indent=1))


def _checkout(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="advex-bad-inputs-")) / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(path), rev], check=True,
                   capture_output=True)  # fmt: skip
    return path


def _verdict(cid: str, r: dict) -> str:
    """ok: a command's one line, exit status 2 and nothing left; a library call's AdvexError
    (or, for the eps warnings, the warning)."""
    if cid.startswith("library:"):
        ok = r["rc"] == "AdvexError" or (cid.endswith("-warns") and "warned:" in r["line"])
    else:
        ok = r["rc"] == 2 and r["stderr_lines"] == 1 and r["left"] == "nothing"
    return "ok" if ok else "NO"


def _md(results: dict, old: str, new: str, machine: str, command: str) -> str:
    def cell(r: dict) -> str:
        line = r["line"].replace("|", "\\|")
        if len(line) > 150:
            line = line[:150].rsplit(" ", 1)[0] + " ..."
        return f"{r['rc']} | {r['stderr_lines']} | {line} | {r['left']}"

    ids = list(results["new"])
    verdict = {side: {i: _verdict(i, results[side][i]) for i in ids} for side in ("old", "new")}
    good = {side: sum(v == "ok" for v in verdict[side].values()) for side in verdict}
    rows = [
        "# Bad input, before and after",
        "",
        "Every bad input of `tests/bad_inputs.py` (walked by `tests/test_front_door.py`) and the library's",
        f"bad labels, model outputs and pixels, on {old} (before) and {new} (after), side by side.",
        f"Machine: {machine}. Command: `{command}`.",
        "",
        "Columns per side: exit status (2 is a user error; for library cases, the exception), lines on",
        "stderr, the error line (or the last line), and what was left in the folder the cases share.",
        f"{len(ids)} cases: {good['old']} answered as they should before (one line, exit status 2, nothing left;",
        f"for the library, an AdvexError or the warning), {good['new']} after.",
        "",
        "| case | before: exit | lines | line | left on disk | after: exit | lines | line | left on disk | ok after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i in ids:
        rows.append(f"| `{i}` | {cell(results['old'][i])} | {cell(results['new'][i])} | {verdict['new'][i]} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--old", default="8354157", help="the commit the front-door issue was filed against (default 8354157)"
    )
    ap.add_argument("--timeout", type=int, default=20, help="seconds before a case is stopped (default 20)")
    ap.add_argument("--memory-gb", type=float, default=10.0, help="address-space cap per checkout (default 10)")
    ap.add_argument("--data-dir", default=os.environ.get("ADVEX_DATA", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--md", default=str(ROOT / "docs" / "bad-inputs.md"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bad_inputs.json"))
    ap.add_argument("--worker", nargs=2, metavar=("TMP", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), Path(args.worker[1]), args.timeout, args.memory_gb)
        return 0

    from bad_inputs import prepare

    from advex.report import machine

    have_data = (Path(args.data_dir) / "mnist").is_dir()
    old = _checkout(args.old)
    results = {}
    try:
        for side, src in (("old", old / "src"), ("new", ROOT / "src")):
            tmp = Path(tempfile.mkdtemp(prefix=f"advex-bad-{side}-"))
            prepare(tmp, data=have_data)
            out = tmp.parent / f"{tmp.name}.json"
            env = dict(os.environ, PYTHONPATH=str(src), ADVEX_DATA=args.data_dir)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--worker", str(tmp), str(out), "--timeout", str(args.timeout),
                            "--memory-gb", str(args.memory_gb)], env=env, cwd=tmp, check=True)  # fmt: skip
            print(f"{side}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            results[side] = json.loads(out.read_text())
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    new = f"the working tree (HEAD {rev.stdout.strip()})"
    command = "python benchmarks/bad_inputs.py " + " ".join(sys.argv[1:])
    Path(args.json).write_text(json.dumps({"old": args.old, "new": new, **results}, indent=1))
    Path(args.md).write_text(_md(results, args.old, new, machine(), command.strip()))
    bad = [i for i, r in results["new"].items() if _verdict(i, r) == "NO"]
    print(f"wrote {args.md} and {args.json}; after: {len(bad)} case(s) not one line + exit 2 + nothing left: {bad}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
