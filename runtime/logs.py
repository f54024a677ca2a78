"""Reading the json-file log the shim writes (`<id>-json.log`, one JSON object per line).

The shim appends whole lines; a reader only ever yields complete lines, so a line being
written while we read is picked up on the next pass (follow) instead of half-parsed.
"""
from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .clock import parse_rfc3339

FOLLOW_POLL = 0.05


@dataclass
class LogEntry:
    """One chunk of output: `stream` is "stdout" or "stderr", `time` RFC 3339 with nanoseconds."""

    stream: str
    time: str
    data: bytes


def _parse(line: bytes) -> LogEntry | None:
    try:
        obj = json.loads(line)
        return LogEntry(stream=obj["stream"], time=obj["time"], data=obj["log"].encode("utf-8", "surrogateescape"))
    except (ValueError, KeyError, TypeError):
        return None  # a corrupt line (e.g. disk full mid-write) is skipped, as Docker does


def _keep(entry: LogEntry | None, since: float) -> bool:
    if entry is None:
        return False
    if not since:
        return True
    try:
        return parse_rfc3339(entry.time) >= since
    except ValueError:
        return False


def read_log(path: Path, follow: bool = False, tail: int | None = None, since: float = 0,
             stopped: Callable[[], bool] = lambda: True) -> Iterator[LogEntry]:
    """Entries of the log; with `follow`, keep yielding new ones until `stopped()` is true."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        pending = b""
        data = f.read()
        lines = data.split(b"\n")
        pending = lines.pop()
        entries: Iterator[LogEntry | None] = (_parse(line) for line in lines)
        selected = [e for e in entries if _keep(e, since)]
        if tail is not None:
            selected = list(deque(selected, maxlen=tail)) if tail > 0 else []
        yield from selected  # type: ignore[misc]
        if not follow:
            return
        while True:
            done = stopped()  # checked before reading, so output written before the exit is never lost
            chunk = f.read()
            if chunk:
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    entry = _parse(line)
                    if _keep(entry, since):
                        yield entry  # type: ignore[misc]
            elif done:
                return
            else:
                time.sleep(FOLLOW_POLL)


