"""``advex models``: the model zoo, one line per model."""

from __future__ import annotations

import argparse

from advex.cli import options

NAME = "models"
HELP = "list the model zoo"


def add_parser(sub) -> argparse.ArgumentParser:
    return options.add_command(sub, NAME, HELP, __doc__)


def run(args) -> int:
    from advex.models import describe

    for name, text in describe().items():
        print(f"{name:20s} {text}")
    return 0
