"""``advex report DIR``: rebuild DIR/report.html, the self-contained page of a run folder
(what ran, the headline numbers, the figures, warnings), from the JSON and PNGs the run
left there. Every command writes it at the end of its run; this rebuilds it, for example
after a newer advex, or for a folder copied from another machine."""

from __future__ import annotations

import argparse

from advex.cli import options

NAME = "report"
HELP = "rebuild the HTML report of a run folder"


def add_parser(sub) -> argparse.ArgumentParser:
    p = options.add_command(sub, NAME, HELP, __doc__)
    p.add_argument("folder", metavar="DIR", help="a run folder (the --out of evaluate, certify, attack, train, ...)")
    return p


def run(args) -> int:
    from advex.report import build_report

    print(f"wrote {build_report(args.folder)}")
    return 0
