"""Progress events of pulls, pushes, loads and builds, as a plain callback.

The library never draws anything: it calls `progress(event)` with per-layer byte counts, and
the CLI (a tty: bars redrawn in place; otherwise: one line per state change) or the agent's
streaming RPC decides how to show them. `status` strings are Docker's, so users recognize them.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ProgressEvent:
    """One update: `id` is a short layer digest (or "" for the whole operation)."""

    id: str
    status: str          # "Downloading", "Extracting", "Pull complete", "Already exists", "Pushing", "Pushed", ...
    current: int = 0     # bytes done so far for this id
    total: int = 0       # bytes expected (0: unknown)


Progress = Callable[[ProgressEvent], None]


def ignore(_event: ProgressEvent) -> None:
    """The default sink: nobody is watching."""


def short_id(digest: str) -> str:
    """Docker's 12-character layer id shown next to progress bars."""
    return digest.removeprefix("sha256:")[:12]


class ByteCounter:
    """Turns per-chunk byte counts into cumulative `status` events for one layer, thread-safely.

    Events are rate-limited to one per `step` bytes so a 1 GiB layer does not emit 100k events.
    """

    def __init__(self, sink: Progress, ident: str, status: str, total: int, step: int = 512 * 1024) -> None:
        self.sink, self.ident, self.status, self.total, self.step = sink, ident, status, total, step
        self.current = 0
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self._lock:
            self.current += n
            if self.current - self._last < self.step and self.current != self.total:
                return
            self._last = self.current
            current = self.current
        self.sink(ProgressEvent(self.ident, self.status, current, self.total))

    def finish(self) -> None:
        """Emit the final count (rate limiting may have swallowed the last chunks)."""
        with self._lock:
            current = self._last = self.current
        self.sink(ProgressEvent(self.ident, self.status, current, self.total or current))
