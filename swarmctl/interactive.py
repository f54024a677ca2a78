"""Interactive streams (`run`, `start -a`, `attach`, `exec`): stdin, a real tty, exit codes.

The gRPC call is bidirectional: a queue feeds the request stream (the opening message, stdin
chunks from a reader thread, resizes from the SIGWINCH handler) and the main thread writes the
output as it arrives. With `-t` the local terminal is put in raw mode for the session, so keys
such as Ctrl-C reach the container, and restored however the session ends.
"""
from __future__ import annotations

import contextlib
import os
import queue
import signal

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class Outcome:
    exit_code: int | None = None
    container_id: str = ""
    exec_id: str = ""


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[bool]:
    """Raw mode on stdin when it is a terminal; yields whether it was switched."""
    if not enabled or not os.isatty(0):
        yield False
        return
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield True
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def session(method: Callable, pb, first, *, stdin: bool, tty: bool,
            on_start: Callable[[Outcome], None] | None = None) -> Outcome:
    """Run one interactive call to its end and return what it reported."""
    requests: queue.Queue = queue.Queue()
    requests.put(first)
    done = threading.Event()

    def request_stream():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    def send_size(*_: object) -> None:
        with contextlib.suppress(OSError):
            cols, rows = os.get_terminal_size(0)
            requests.put(pb.StreamInput(resize=pb.Resize(rows=rows, cols=cols)))

    def read_stdin() -> None:
        while not done.is_set():
            try:
                data = os.read(0, 65536)
            except OSError:
                data = b""
            if not data:
                requests.put(pb.StreamInput(close_stdin=True))
                return
            requests.put(pb.StreamInput(stdin=data))

    outcome = Outcome()
    with raw_terminal(tty) as raw:
        previous = None
        if raw:
            previous = signal.signal(signal.SIGWINCH, send_size)
            send_size()
        if stdin:
            threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
        call = method(request_stream())
        try:
            for out in call:
                kind = out.WhichOneof("item")
                if kind == "stdout":
                    _write(1, out.stdout)
                elif kind == "stderr":
                    _write(2, out.stderr)
                elif kind == "exit_code":
                    outcome.exit_code = out.exit_code
                elif kind == "container_id":
                    outcome.container_id = out.container_id
                    if on_start:
                        on_start(outcome)
                elif kind == "exec_id":
                    outcome.exec_id = out.exec_id
        except KeyboardInterrupt:
            call.cancel()
            raise
        finally:
            done.set()
            requests.put(None)
            if previous is not None:
                signal.signal(signal.SIGWINCH, previous)
    return outcome


def _write(fd: int, data: bytes) -> None:
    """Write everything (os.write may be partial on a pipe or pty)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


