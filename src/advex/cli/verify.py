"""``advex verify``: decide VNN-COMP instances, an ONNX network and a VNNLIB property each:
``unsat`` (verified: no input of the property's box reaches its unsafe region), ``sat`` (a
counterexample, re-checked in a fresh fp32 pass, written in the VNN-COMP result format) or
``timeout``, by branch and bound (alpha-CROWN, beta-CROWN splits, attacks in the branches).
``--onnx NET --vnnlib PROP [--out result.txt]`` decides one; ``--instances FILE.csv [--out
FOLDER]`` a benchmark set (lines ``onnx,vnnlib,timeout``, paths relative to the CSV's folder),
with a summary table, results.csv and one result file per instance; every file is read before any
search, and a network advex cannot read stops the run (``--skip-unsupported``: its instances are
answered ``unknown`` and the rest decided)."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from advex.cli import options
from advex.errors import AdvexError

NAME = "verify"
HELP = "decide ONNX + VNNLIB instances (VNN-COMP): unsat, sat with a counterexample, or timeout"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    p.add_argument("--onnx", metavar="NET.onnx", help="the network (.onnx or .onnx.gz)")
    p.add_argument("--vnnlib", metavar="PROP.vnnlib", help="the property (.vnnlib or .vnnlib.gz)")
    p.add_argument("--instances", metavar="FILE.csv", help="a benchmark set: lines onnx,vnnlib,timeout")
    p.add_argument(
        "--timeout", type=options.number(0, above=True), default=None,
        help="seconds per instance (default 60; with --instances, each line's own, which this overrides)",
    )  # fmt: skip
    p.add_argument("--split", choices=["auto", "relu", "input"], default="auto",
                   help="what branches split: ReLUs (beta-CROWN), the input box, or auto (default: the input box "
                        "for at most 16 inputs and over 200 ReLUs, as ACAS Xu)")  # fmt: skip
    p.add_argument("--branches", type=options.integer(1), default=64, help="domains split per round (default 64)")
    p.add_argument(
        "--skip-unsupported",
        action="store_true",
        help="--instances: answer 'unknown' for instances whose network advex cannot read (an operator "
        "outside its set, named) and go on; by default the run stops on it before any search",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    p.add_argument("--seed", type=options.seed, default=0, help="random seed (default 0)")
    p.add_argument("--out", dest="result", default=None,
                   help="one instance: the result file to write (VNN-COMP format); --instances: a folder for "
                        "results.csv and the result files (default: print only)")  # fmt: skip
    return p


def run(args) -> int:
    from advex.certify import BabSettings

    instances = _instances(args)
    settings = BabSettings(split=args.split, batch=args.branches)
    if args.result is not None:
        _check_out(args, len(instances))
    from advex.certify import read_vnnlib, verify
    from advex.models import OnnxError, load_onnx, resolve_device

    if args.skip_unsupported and args.instances is None:
        raise AdvexError("--skip-unsupported goes with --instances (one instance has nothing to go on to)")
    device = resolve_device(args.device)
    nets, props, unreadable = {}, {}, {}
    for net_path, prop_path, _ in instances:  # every file read before any search: a bad one fails now
        if net_path in unreadable:
            continue
        if net_path not in nets:
            try:
                nets[net_path] = load_onnx(net_path).to(device)
            except OnnxError as e:
                if not args.skip_unsupported:
                    raise
                unreadable[net_path] = str(e)
                continue
        if prop_path not in props:
            props[prop_path] = read_vnnlib(Path(prop_path), inputs=_numel(nets[net_path].in_shape))
    rows = []
    for i, (net_path, prop_path, timeout) in enumerate(instances, 1):
        count = f"[{i}/{len(instances)}] " if len(instances) > 1 else ""
        head = f"{count}{Path(net_path).name} {Path(prop_path).name}:"
        row = {"onnx": net_path, "vnnlib": prop_path, "timeout_s": timeout}
        if net_path in unreadable:
            print(f"{head} unsupported ({unreadable[net_path]})", flush=True)
            row.update(result="unsupported", time_s=0.0, domains=0, text="unknown\n")
        else:
            v = verify(nets[net_path], props[prop_path], timeout=timeout, bab=settings)
            why = f"; {v.reason}" if v.result == "timeout" and v.reason else ""
            print(f"{head} {v.result} in {v.time_s:.2f} s ({v.domains} domains{why})", flush=True)
            row.update(result=v.result, time_s=round(v.time_s, 3), domains=v.domains, text=v.vnncomp())
        rows.append(row)
        if args.instances is not None and args.result is not None:
            _write_set(Path(args.result), rows)
    if args.instances is None:
        if args.result is not None:
            from advex.data import atomic_write_bytes

            atomic_write_bytes(args.result, rows[0]["text"].encode())
            print(f"wrote {args.result}")
        elif rows[0]["result"] == "sat":
            print(rows[0]["text"], end="")
        return 0
    _summary(rows)
    if args.result is not None:
        print(f"wrote {Path(args.result) / 'results.csv'} and {len(rows)} result files")
    return 0


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _instances(args) -> list[tuple[str, str, float]]:
    if args.instances is not None:
        if args.onnx or args.vnnlib:
            raise AdvexError("give either --instances or --onnx with --vnnlib, not both")
        return read_instances(args.instances, args.timeout)
    if not (args.onnx and args.vnnlib):
        raise AdvexError("give --onnx NET.onnx and --vnnlib PROP.vnnlib, or --instances FILE.csv")
    for path, what in ((args.onnx, "--onnx"), (args.vnnlib, "--vnnlib")):
        if not Path(path).is_file():
            raise AdvexError(f"{what} {path}: no such file")
    return [(args.onnx, args.vnnlib, args.timeout or 60.0)]


def read_instances(path: str, timeout: float | None) -> list[tuple[str, str, float]]:
    """The lines ``onnx,vnnlib,timeout`` of a VNN-COMP instances CSV, paths resolved against
    its folder; ``timeout`` (if given) replaces each line's."""
    p = Path(path)
    if not p.is_file():
        raise AdvexError(f"--instances {path}: no such file")
    out = []
    for n, row in enumerate(csv.reader(io.StringIO(p.read_text())), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise AdvexError(f"{p.name} line {n}: expected onnx,vnnlib,timeout, got {len(row)} fields")
        net, prop, t = (c.strip() for c in row)
        try:
            t = float(t)
        except ValueError:
            raise AdvexError(f"{p.name} line {n}: the timeout {t!r} is not a number of seconds") from None
        if not t > 0:
            raise AdvexError(f"{p.name} line {n}: the timeout must be > 0 seconds, got {t:g}")
        files = []
        for f, what in ((net, "network"), (prop, "property")):
            q = Path(f) if Path(f).is_absolute() else p.parent / f
            if not q.is_file():
                raise AdvexError(f"{p.name} line {n}: the {what} {f} does not exist (looked for {q})")
            files.append(str(q))
        out.append((files[0], files[1], timeout if timeout is not None else t))
    if not out:
        raise AdvexError(f"{p.name} lists no instances")
    return out


def _check_out(args, n: int) -> None:
    from advex.data import check_writable

    out = Path(args.result)
    if args.instances is not None:
        check_writable(out, "--out")
        return
    if out.is_dir():
        raise AdvexError(f"--out {out} is a folder; give the result file to write")
    check_writable(out.parent if str(out.parent) else Path("."), "--out's folder")


def _write_set(out: Path, rows: list[dict]) -> None:
    from advex.data import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    keys = ["onnx", "vnnlib", "timeout_s", "result", "time_s", "domains", "result_file"]
    w = csv.DictWriter(buf, keys, lineterminator="\n")
    w.writeheader()
    for i, r in enumerate(rows, 1):
        name = f"{i:04d}_{Path(r['onnx']).name.split('.')[0]}_{Path(r['vnnlib']).name.split('.')[0]}.txt"
        if "result_file" not in r:
            atomic_write_bytes(out / name, r["text"].encode())
            r["result_file"] = name
        w.writerow({k: r[k] for k in keys})
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())


def _summary(rows: list[dict]) -> None:
    from advex.report import print_table

    table = []
    kinds = ["unsat", "sat", "timeout"] + (["unsupported"] if any(r["result"] == "unsupported" for r in rows) else [])
    for result in (*kinds, "all"):
        these = [r for r in rows if result in (r["result"], "all")]
        t = sum(r["time_s"] for r in these)
        table.append({"result": result, "n": len(these), "share": f"{100 * len(these) / len(rows):.1f}%",
                      "s": f"{t:.1f}", "mean": f"{t / len(these):.2f}" if these else "-"})  # fmt: skip
    print_table(table, [("result", "result"), ("n", "instances"), ("share", "share"), ("s", "seconds"),
                        ("mean", "mean s")])  # fmt: skip
