"""Showing the agent's image progress events (pull, push, load, build) the way Docker does.

On a terminal every layer id owns one line that is redrawn in place (`a3ed95caeb02: Downloading
[=====>     ] 1.2MB/3.4MB`); lines without an id (build steps, RUN output) scroll above and
below them. Anywhere else (a pipe, a CI log) a line is printed only when a layer's status
changes, never a byte count, so logs stay readable.
"""
from __future__ import annotations

import shutil
from typing import TextIO

from .formatting import human_size

BAR_WIDTH = 50
BYTE_STATES = ("Downloading", "Extracting", "Pushing")  # statuses that carry byte counts


def bar(current: int, total: int, width: int = BAR_WIDTH) -> str:
    """Docker's progress bar: `[=====>     ] 1.2MB/3.4MB`; only the sizes when the total is
    unknown or `width` leaves no room for a bar."""
    if total <= 0:
        return human_size(current) if current else ""
    sizes = f"{human_size(current)}/{human_size(total)}"
    if width < 10:
        return sizes
    filled = min(width, width * current // total)
    arrow = "=" * max(0, filled - 1) + (">" if filled < width and filled > 0 else "=" if filled else "")
    return f"[{arrow.ljust(width)}] {sizes}"


class ProgressPrinter:
    """Renders `ImageProgress` messages on `out`; `tty` picks in-place bars or plain lines."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.lines = 0                      # lines written so far (tty)
        self.line_of: dict[str, int] = {}   # layer id -> its line number (tty)
        self.status: dict[str, str] = {}    # layer id -> last status printed (plain)

    def show(self, event) -> None:
        """One event: `id`, `status`, `current`, `total` (an `ImageProgress` message)."""
        if not event.id:
            self._line(event.status)
        elif self.tty:
            head = f"{event.id}: {event.status}"
            if event.current or event.status in BYTE_STATES:  # "Waiting", "Pull complete": no bar
                room = shutil.get_terminal_size().columns - len(head) - len(" [] 999.9MB/999.9MB") - 1
                head += " " + bar(event.current, event.total, min(BAR_WIDTH, room))
            self._redraw(event.id, head.rstrip())
        elif self.status.get(event.id) != event.status:
            self.status[event.id] = event.status
            self._line(f"{event.id}: {event.status}")
        self.out.flush()

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.lines += text.count("\n") + 1

    def _redraw(self, ident: str, text: str) -> None:
        """Rewrite the id's own line: move up to it, clear it, write, move back down."""
        if ident not in self.line_of:
            self.line_of[ident] = self.lines
            self._line(text[:shutil.get_terminal_size().columns - 1])
            return
        text = text[:shutil.get_terminal_size().columns - 1]  # a wrapped line would break the line count
        up = self.lines - self.line_of[ident]
        self.out.write(f"\x1b[{up}A\r\x1b[2K{text}\r\x1b[{up}B")
