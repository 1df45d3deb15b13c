"""``advex models``: the model zoo, one line per model."""

from __future__ import annotations

import argparse

NAME = "models"
HELP = "list the model zoo"


def add_parser(sub) -> argparse.ArgumentParser:
    return sub.add_parser(NAME, help=HELP, description=__doc__)


def run(args) -> int:
    from advex.models import describe

    for name, text in describe().items():
        print(f"{name:20s} {text}")
    return 0
