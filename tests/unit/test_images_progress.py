"""Progress events: byte counting, rate limiting, and the iterator form."""
from __future__ import annotations

import pytest

from flotilla.runtime.errors import NotFound
from flotilla.runtime.imaging.progress import ByteCounter, Done, ProgressEvent, events, short_id


def test_byte_counter_rate_limits_and_finishes() -> None:
    seen: list[ProgressEvent] = []
    counter = ByteCounter(seen.append, "abc", "Downloading", total=10_000, step=4096)
    for _ in range(10):
        counter(1000)
    assert [e.current for e in seen] == [5000, 10_000]
    extracting = ByteCounter(seen.append, "abc", "Extracting", total=0, step=1 << 20)
    extracting(300)
    extracting.finish()
    assert seen[-1] == ProgressEvent("abc", "Extracting", 300, 300)
    assert short_id("sha256:" + "f" * 64) == "f" * 12


def test_events_iterator_yields_then_returns() -> None:
    def op(progress):
        for i in range(3):
            progress(ProgressEvent("x", "step", i, 3))
        return "result"

    items = list(events(op))
    assert [e.current for e in items[:-1]] == [0, 1, 2]
    assert items[-1] == Done("result")


def test_events_iterator_raises_after_earlier_events() -> None:
    def op(progress):
        progress(ProgressEvent("", "Pulling"))
        raise NotFound("no such image: x")

    it = events(op)
    assert next(it).status == "Pulling"
    with pytest.raises(NotFound, match="no such image"):
        next(it)
