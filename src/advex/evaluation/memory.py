"""The process's heap under glibc, which long runs of tensors of changing sizes trip over twice:
freed pages kept (memory that grows with the number of batches: :class:`HeapTrim` gives them
back between batches) and freed pages given back too eagerly (every forward pass faulting its
activations in afresh: :func:`reuse_freed_memory` keeps them). Elsewhere than glibc, both do
nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit systems


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def reuse_freed_memory(trim_mb: int = 1024) -> bool:
    """Have glibc serve tensors of up to 32 MB from its heap and keep up to ``trim_mb`` of freed
    heap instead of returning it at once; True if it took.

    By default glibc maps large blocks fresh and returns freed heap tops to the system as
    soon as they exceed a threshold it tunes itself; a loop of forward passes whose
    activations are freed between passes can then fault every page of them in again on every
    pass. Measured here (randomized smoothing of a small CIFAR-10 network, 1,000 noisy images
    a pass): 5.2 million page faults, twice the time of the forward passes alone; with this,
    15% over them. Called once by the ``advex`` command; call it in your own long-running
    script for the same. Memory given back between batches is :class:`HeapTrim`'s job."""
    try:
        libc = _libc()
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
        return ok and libc.mallopt(M_TRIM_THRESHOLD, trim_mb << 20) == 1
    except (OSError, AttributeError):
        return False


class HeapTrim:
    """Give freed heap memory back to the system between batches, whenever the process has
    grown by ``grow_mb`` over its size after the last time (at first: after the first batch).

    glibc's allocator keeps the pages of freed tensors in its heap, and batches whose attacked
    subsets change size from batch to batch leave them fragmented: without this, an evaluation
    of a 50,000-image folder grew by ~10 KB per image (0.5 GB) though it holds no image past its
    batch. So the resident set stays within ``grow_mb`` (plus a batch's own working memory) of
    what the run needs, whatever the number of images. A ``malloc_trim`` and the page faults of
    the next batch cost ~40 ms, hence the margin: trimming after every batch of the cheapest
    evaluation (one FGSM step of a small CIFAR-10 network) made it 25% slower. Where there is no
    glibc or no /proc, it never runs."""

    def __init__(self, grow_mb: float = 192) -> None:
        self.grow, self.floor = grow_mb * 1e6, None
        try:
            self.trim = _libc().malloc_trim
            self.page = os.sysconf("SC_PAGE_SIZE")
            self._rss()
        except (OSError, AttributeError, ValueError):
            self.trim = None

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __call__(self, force: bool = False) -> None:
        if self.trim is None:
            return
        rss = self._rss()
        if self.floor is None and not force:
            self.floor = rss
        elif force or rss - self.floor > self.grow:
            self.trim(0)
            self.floor = self._rss()
