"""A run's journal, so that an interrupted run loses at most the batch in flight.

``OUT/journal/`` holds ``run.json`` (the command and every setting that decides the
results: model, data, eps, attacks, seed, batch size ...) and one JSON file per finished
batch of images, named by the span of positions it covers (``000000-000100.json``), each
written atomically (a temporary sibling, then a rename), so a kill at any moment leaves
either the whole file or none. ``--resume`` reads the finished batches back and the run
does only the rest; its final outputs equal an uninterrupted run's, because every batch's
randomness is seeded by its first image's position, not by what ran before it.

A run whose progress is a training state rather than batches (``patch train``) keeps that
state in ``state.safetensors`` beside ``run.json`` (:attr:`Journal.state_file`), replaced
atomically every few steps.

A journal from another command, model, data or setting is refused on ``--resume``, naming
each difference; an unfinished journal is never overwritten by a run without ``--resume``.
Under ``torchrun`` every process writes the batches it finished; rank 0 writes
``run.json`` and reads them all at the end (``--out`` on a shared filesystem for several
nodes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from advex.data import atomic_write_bytes
from advex.errors import AdvexError

_SPAN = re.compile(r"^(\d+)-(\d+)\.json$")


def span_key(span: tuple[int, int]) -> str:
    """The journal's name of a span of positions [start, stop)."""
    return f"{span[0]:06d}-{span[1]:06d}"


class Journal:
    """The journal of one run in ``out/journal``; ``settings`` is what makes two runs the same."""

    def __init__(self, out: str | Path, settings: dict[str, Any]) -> None:
        self.folder = Path(out) / "journal"
        self.settings = json.loads(json.dumps(settings))  # as it reads back: lists, not tuples
        self.fresh = True

    @classmethod
    def open(cls, out: str | Path, settings: dict[str, Any], *, resume: bool) -> Journal:
        """The journal for a run writing to ``out``, checked but not yet written: the existing
        one with ``resume`` (refused if it records another run), else a fresh one (refused over
        an unfinished run). Every process checks; the main one then calls :meth:`start`."""
        j = cls(out, settings)
        saved = j._saved()
        if resume:
            if saved is None:
                raise AdvexError(f"--resume: {j.folder} holds no journal to continue; run without --resume")
            diff = differences(saved.get("settings", {}), j.settings)
            if diff:
                raise AdvexError(
                    f"--resume: the journal in {j.folder} records another run ({'; '.join(diff)}); "
                    "give the same command and settings, or another --out"
                )
        elif saved is not None and not saved.get("complete"):
            progress = "its training state saved" if j.state_file.is_file() else f"{len(j.done())} batches done"
            raise AdvexError(
                f"{j.folder} holds an unfinished run ({progress}); pass --resume to continue it, or give another --out"
            )
        j.fresh = not resume
        return j

    @property
    def state_file(self) -> Path:
        """Where a run whose progress is a training state (``patch train``) keeps it."""
        return self.folder / "state.safetensors"

    def start(self) -> None:
        """Begin writing (the main process, once): a fresh journal replaces a finished one."""
        if self.fresh:
            self._clear()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_run(complete=False)

    def _saved(self) -> dict[str, Any] | None:
        path = self.folder / "run.json"
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            raise AdvexError(f"{path} is not a readable journal; delete {self.folder} to start over") from None
        return saved if isinstance(saved, dict) else {}

    def _clear(self) -> None:
        if self.folder.is_dir():
            for f in self.folder.iterdir():
                if _SPAN.match(f.name) or f.name in ("run.json", self.state_file.name) or f.name.startswith("."):
                    f.unlink()

    def _write_run(self, complete: bool) -> None:
        body = {"settings": self.settings, "complete": complete}
        atomic_write_bytes(self.folder / "run.json", (json.dumps(body, indent=1) + "\n").encode())

    def done(self) -> dict[str, Any]:
        """The finished batches: span name -> what the run recorded for it."""
        out: dict[str, Any] = {}
        if not self.folder.is_dir():
            return out
        for f in sorted(self.folder.iterdir()):
            if _SPAN.match(f.name):
                try:
                    out[f.stem] = json.loads(f.read_text())
                except (OSError, ValueError):  # not written by us (atomic writes): start that batch again
                    continue
        return out

    def record(self, span: tuple[int, int], result: Any) -> None:
        """Keep what a finished batch gave (atomically)."""
        atomic_write_bytes(self.folder / f"{span_key(span)}.json", json.dumps(result).encode())

    def finish(self) -> None:
        """Mark the run complete: a later run in the same folder may start over."""
        self._write_run(complete=True)


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two runs' settings, one phrase per setting."""
    out = []
    for k in sorted(set(saved) | set(now)):
        if saved.get(k) != now.get(k):
            out.append(f"{k}: journal {_show(saved.get(k))}, now {_show(now.get(k))}")
    return out


def _show(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."
