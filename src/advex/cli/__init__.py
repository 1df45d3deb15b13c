"""The ``advex`` command line: one module per command, each a short script of library calls.

A command module has ``NAME``, ``HELP``, ``add_parser(subparsers)`` and ``run(args)``; the
options they share (``--model``, ``--device``, ``--seed``, ``--data-dir``, ``--out``,
``--quiet``, eps lists) are declared in :mod:`advex.cli.options` and checked there once,
for every command, before any work. Every user error is one line on stderr and exit
status 2; summaries and tables go through :mod:`advex.report`, and every run folder gets its
report.html here, in :func:`main`, once for every command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from advex import __version__
from advex.cli import attack, certify, demo, evaluate, models, onepixel, options, patch, report, train, verify
from advex.errors import AdvexError

COMMANDS = (demo, attack, models, onepixel, patch, evaluate, certify, verify, train, report)


def build_parser() -> options.Parser:
    parser = options.Parser(prog="advex", description="Adversarial examples: craft, defend, certify.")
    parser.add_argument("--version", action="version", version=f"advex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = command.add_parser(sub)
        if hasattr(command, "run"):  # (patch has two subcommands, each with its own)
            p.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if getattr(args, "run", None) is None:
        getattr(args, "_help", parser.print_help)()
        return 2
    try:
        from advex.evaluation import reuse_freed_memory

        reuse_freed_memory()  # a process of long loops: keep freed heap for the next pass (glibc only)
        options.check(args)
        if hasattr(args, "seed"):
            import torch

            torch.manual_seed(args.seed)
        rc = args.run(args)
        if rc == 0:
            write_report(args)
        return rc
    except AdvexError as e:
        print(f"advex: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if getattr(args, "resume", None) is not None:
            print(
                f"advex: interrupted; the journal in {args.out} keeps the work finished so far: "
                "run the same command with --resume to continue",
                file=sys.stderr,
            )
        else:
            print("advex: interrupted; outputs already written are complete, nothing half-written", file=sys.stderr)
        return 130


def write_report(args) -> None:
    """Every run folder gets its report.html, written here once for every command: after a
    run that succeeded, into its ``--out`` (by rank 0 alone under torchrun). The run's own
    files are written already; a report that fails is a warning, never a lost run."""
    out = getattr(args, "out", None)
    if out is None or not os.path.isdir(out) or os.environ.get("RANK", "0") != "0":
        return
    from advex.report import build_report

    try:
        path = build_report(out)
    except Exception as e:  # whatever it is, the run's results stand
        print(f"advex: warning: no report.html in {out}: {e}", file=sys.stderr)
        return
    print(f"wrote {path}")


__all__ = ["COMMANDS", "build_parser", "main"]
