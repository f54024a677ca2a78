"""Run a consumer of chunks on its own thread while the caller produces them.

A pull unpacks each layer while it downloads: the downloading thread hashes and stores every
chunk and pushes the same buffer here; a second thread decompresses, hashes the diff id and
extracts. zlib, hashlib and file writes release the GIL, so the two stages use both cores
instead of one after the other, and the blob is never read back from disk. The queue holds
at most `depth` chunks (8 MiB), so a slow disk slows the download instead of filling memory.

Protocol: the producer calls `feed()` for every chunk and then exactly one of `finish()`
(the stream is complete and verified: returns the consumer's result or raises its error) or
`cancel()` (the producer failed: the consumer sees `Aborted` and cleans up). If the consumer
fails first, the next `feed()` raises its error and the consumer discards whatever is still
queued, so neither side can block the other forever.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Iterator, TypeVar

from .streams import Chunk

T = TypeVar("T")
_END = object()
_ABORT = object()


class Aborted(Exception):
    """The producer gave up (download failed); raised inside the consumer."""


class ThreadedConsumer(Generic[T]):
    """`target(chunks)` runs on a new thread over the chunks given to `feed`."""

    def __init__(self, target: Callable[[Iterator[Chunk]], T], depth: int = 8, name: str = "consumer") -> None:
        self._queue: queue.Queue[object] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._result: T | None = None
        self._ended = False  # the consumer has taken the end marker off the queue
        self._closed = False  # the producer has put the end marker on it
        self._thread = threading.Thread(target=self._run, args=(target,), name=name, daemon=True)
        self._thread.start()

    def _chunks(self) -> Iterator[Chunk]:
        while True:
            item = self._queue.get()
            if item is _END or item is _ABORT:
                self._ended = True
                if item is _ABORT:
                    raise Aborted("the download was abandoned")
                return
            yield item  # type: ignore[misc]

    def _run(self, target: Callable[[Iterator[Chunk]], T]) -> None:
        try:
            self._result = target(self._chunks())
        except BaseException as e:  # noqa: BLE001 - handed to the producer, which re-raises it
            self._error = e
        finally:
            while not self._ended:  # stopped early: drop the rest so the producer never blocks
                item = self._queue.get()
                self._ended = item is _END or item is _ABORT

    def feed(self, chunk: Chunk) -> None:
        """Queue `chunk` (the consumer must not modify it, nor the producer afterwards)."""
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def finish(self) -> T:
        """End of a complete, verified stream: wait for the consumer and return its result."""
        self._end(_END)
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def cancel(self) -> None:
        """Abandon the stream: the consumer sees `Aborted`; wait until it has cleaned up.
        Harmless after `finish` or another `cancel` (error paths may reach it twice)."""
        self._end(_ABORT)

    def _end(self, marker: object) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(marker)
        self._thread.join()
