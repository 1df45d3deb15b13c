"""Machine-readable summaries and plain-text tables: every command's JSON and stdout go here.

``write_summary`` writes a run's results as JSON with the same provenance header for every
command (what ran, with which advex, torch and Python, on which machine and device, when),
atomically, so an interrupted run never leaves half a file. ``table`` lays out rows as
aligned columns for the terminal.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advex.data import atomic_write_bytes


def machine() -> str:
    """This machine in one line: architecture, OS, CPU count, torch version."""
    import torch

    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def provenance(command: str | Sequence[str], device: Any = None) -> dict[str, Any]:
    """The header of every summary: the command, versions, machine, device and time."""
    import torch

    from advex import __version__

    return {
        "advex_version": __version__,
        "command": command if isinstance(command, str) else " ".join(command),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": machine(),
        "device": None if device is None else str(device),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_summary(
    path: str | os.PathLike, results: Mapping[str, Any], *, command: str | Sequence[str], device: Any = None
) -> dict[str, Any]:
    """Write ``results`` as JSON at ``path`` (atomically) below the provenance header; the
    results' own keys win. Returns what was written."""
    summary = {**provenance(command, device), **results}
    atomic_write_bytes(Path(path), (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows as left-aligned columns: ``columns`` are (key, heading) pairs."""
    cells = [[h for _, h in columns]] + [[str(r[k]) for k, _ in columns] for r in rows]
    widths = [max(len(c[j]) for c in cells) for j in range(len(columns))]
    lines = ["  ".join(c[j].ljust(widths[j]) for j in range(len(columns))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], *, more: int = 0) -> None:
    """Print ``table(rows, columns)`` to stdout, and how many rows were left out (``more``)."""
    print(table(rows, columns), file=sys.stdout)
    if more > 0:
        print(f"... {more} more in the JSON", file=sys.stdout)
