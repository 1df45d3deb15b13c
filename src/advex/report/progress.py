"""A progress bar with an ETA on stderr, for the long loops of a run (images done, and what
is running now: the attack and eps). It draws only on a terminal and not under --quiet, so
logs and pipes stay clean."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``total`` items of ``unit``; ``advance(k)`` after each k done, ``status(text)`` for what
    runs now. ``enabled=None`` draws only when ``stream`` is a terminal."""

    def __init__(
        self, total: int, unit: str = "images", *, done: int = 0, enabled: bool | None = None, stream: TextIO = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(enabled if enabled is not None else getattr(self.stream, "isatty", lambda: False)())
        self.total, self.unit = total, unit
        self.done = self._first = done  # items finished before this process started (a resumed run)
        self.text = ""
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._width = 0

    def status(self, text: str) -> None:
        self.text = text
        self._draw()

    def advance(self, k: int) -> None:
        self.done += k
        self._draw(force=True)

    def eta(self) -> float | None:
        """Seconds left at this run's rate so far (None before the first item)."""
        now = self.done - self._first
        if now <= 0:
            return None
        return (time.perf_counter() - self._t0) / now * max(self.total - self.done, 0)

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        eta = self.eta()
        left = "ETA --" if eta is None else f"ETA {_clock(eta)}"
        return f"[{bar}] {self.done}/{self.total} {self.unit}  {left}  {self.text}".rstrip()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        text = self.line()
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """Clear the bar's line."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


def _clock(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
