"""Progress events of pulls, pushes, loads and builds, as a plain callback.

The library never draws anything: it calls `progress(event)` with per-layer byte counts, and
the CLI (a tty: bars redrawn in place; otherwise: one line per state change) or the agent's
streaming RPC decides how to show them. `status` strings are Docker's, so users recognize them.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


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


@dataclass(frozen=True)
class Done(Generic[T]):
    """The last item of `events()`: the operation's return value."""

    result: T


def events(operation: Callable[[Progress], T]) -> Iterator[ProgressEvent | Done[T]]:
    """Run `operation(progress)` in a thread and yield its events as they come, then `Done(result)`.

    For a server-streaming RPC or a CLI loop that prefers iterating to callbacks. An exception
    of the operation is raised from the iterator after the events that preceded it.
    """
    q: queue.Queue[tuple[str, object]] = queue.Queue()

    def work() -> None:
        try:
            q.put(("done", operation(lambda e: q.put(("event", e)))))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer's thread
            q.put(("error", e))

    thread = threading.Thread(target=work, name="image-operation", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "event":
                yield item  # type: ignore[misc]
            elif kind == "done":
                yield Done(item)  # type: ignore[arg-type]
                return
            else:
                raise item  # type: ignore[misc]
    finally:
        thread.join()
