"""One loop for the long runs (evaluate, certify, onepixel): images in batches of fixed
spans, this process's share of them, a journal entry per finished batch, a progress bar,
and every batch's result gathered on rank 0 in the order of the images.

The unit of work is a span of positions [start, stop) of the data, ``batch_size`` long:
the same spans whatever the number of processes, and each span's randomness is seeded by
its first position (:func:`batch_seed`), so one process and several give the same results
to the bit, and so does a run resumed from its journal. Process ``rank`` of ``world``
takes every ``world``-th span still to do; images are decoded by background workers
(:func:`advex.data.stream`) while the batch before runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from advex.data import Batch, stream
from advex.evaluation.journal import Journal, span_key
from advex.evaluation.memory import HeapTrim
from advex.evaluation.shard import Processes, gather
from advex.report import ProgressBar


def spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each batch of ``batch_size`` out of ``n`` images."""
    return [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]


def batch_seed(seed: int, start: int) -> int:
    """The seed of the batch whose first image is at position ``start``: the run's own seed
    for the first batch, so a run of one batch draws what the library call draws."""
    return (seed + start) % 2**32


@dataclass
class Done:
    """What a run gathered: each batch's result in the order of the images (none for a batch
    whose every file was unreadable), the positions each covered, the files skipped as
    unreadable, and how many batches came from a journal."""

    results: list[Any]
    index: list[list[int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    resumed: int = 0
    batch_size: int = 0


def run_batches(
    source,
    work: Callable[[Batch, ProgressBar], Any],
    *,
    batch_size: int,
    prepare: Callable | None = None,
    journal: Journal | None = None,
    procs: Processes = Processes(),
    progress: bool = True,
    workers: int = 2,
) -> Done | None:
    """``work(batch, bar)`` on every batch of ``source`` (an ``ArrayDataset`` or
    ``ImageFiles``) not already in ``journal``, this process's share of them; its result must
    be JSON-able. Returns, on rank 0, every batch's result (``None`` on the other ranks)."""
    every = spans(len(source), batch_size)
    done = journal.done() if journal is not None else {}
    todo = [s for s in every if span_key(s) not in done]
    mine = todo[procs.rank :: procs.world]
    first = sum(b - a for a, b in every) - sum(b - a for a, b in todo)
    share = "" if procs.world == 1 else f" (process {procs.rank} of {procs.world})"
    bar = ProgressBar(
        first + sum(b - a for a, b in mine), "images" + share, done=first, enabled=None if progress else False
    )
    new: dict[str, Any] = {}
    trim = HeapTrim()
    try:
        for batch in stream(source, mine, prepare, workers=workers):
            entry = {  # a batch whose every file was unreadable has nothing to work on
                "result": work(batch, bar) if len(batch) else None,
                "index": batch.index.tolist(),
                "skipped": [list(s) for s in batch.skipped],
            }
            span = (batch.start, batch.stop)
            if journal is not None:
                journal.record(span, entry)
            new[span_key(span)] = entry
            bar.advance(batch.stop - batch.start)
            del batch
            trim()
    finally:
        bar.close()
    trim(force=True)  # what the run freed, before the caller's own work (an evaluation's sanity checks)
    parts = gather(procs, new)
    if parts is None:
        return None
    for p in parts:
        done.update(p)
    entries = [done[span_key(s)] for s in every]
    worked = [e for e in entries if e["index"]]
    return Done(
        [e["result"] for e in worked],
        [e["index"] for e in worked],
        [tuple(s) for e in entries for s in e["skipped"]],
        resumed=len(every) - len(todo),
        batch_size=batch_size,
    )
