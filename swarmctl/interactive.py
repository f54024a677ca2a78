"""Interactive streams (`run`, `start -a`, `attach`, `exec`): stdin, a real tty, exit codes.

The call (gRPC or the CLI socket's) is bidirectional: a queue feeds the request stream (the opening message, stdin
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


class Outcome:
    """What an interactive call reported (a plain class: `dataclasses` costs the CLI ~10 ms to import)."""

    def __init__(self) -> None:
        self.exit_code: int | None = None
        self.container_id = ""
        self.exec_id = ""
        self.detached = False


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


DETACH_KEYS = b"\x10\x11"  # Ctrl-P Ctrl-Q, Docker's default detach sequence
PROXIED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def session(client, method: str, first, *, stdin: bool, tty: bool,
            forward_signal: Callable[[Outcome, int], None] | None = None) -> Outcome:
    """Run one interactive call (`method` of client.stub: Run, Attach, Exec) to its end and
    return what it reported.

    With a tty, Ctrl-P Ctrl-Q detaches (the container keeps running). Without one, signals
    this process receives are handed to `forward_signal` (Docker's --sig-proxy), which runs
    in its own thread because it makes an RPC.
    """
    pb = client.pb
    requests: queue.Queue = queue.Queue()
    requests.put(first)
    done = threading.Event()
    outcome = Outcome()
    calls: list = []

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

    def read_stdin(raw: bool) -> None:
        previous = b""
        while not done.is_set():
            try:
                data = os.read(0, 65536)
            except OSError:
                data = b""
            if not data:
                requests.put(pb.StreamInput(close_stdin=True))
                return
            if raw and DETACH_KEYS in previous[-1:] + data:
                cut = (previous[-1:] + data).index(DETACH_KEYS) - len(previous[-1:])
                if cut > 0:
                    requests.put(pb.StreamInput(stdin=data[:cut]))
                outcome.detached = True
                calls[0].cancel()
                return
            previous = data
            requests.put(pb.StreamInput(stdin=data))

    def proxy(signum: int, _frame: object) -> None:
        threading.Thread(target=forward_signal, args=(outcome, signum), daemon=True).start()

    with raw_terminal(tty) as raw:
        saved: dict[int, object] = {}
        if raw:
            saved[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, send_size)
            send_size()
        elif forward_signal is not None:
            saved.update({sig: signal.signal(sig, proxy) for sig in PROXIED_SIGNALS})
        calls.append(getattr(client.stub, method)(request_stream()))
        if stdin:
            threading.Thread(target=read_stdin, args=(raw,), name="stdin", daemon=True).start()
        try:
            for out in calls[0]:
                kind = out.WhichOneof("item")
                if kind == "stdout":
                    _write(1, out.stdout)
                elif kind == "stderr":
                    _write(2, out.stderr)
                elif kind == "exit_code":
                    outcome.exit_code = out.exit_code
                elif kind == "container_id":
                    outcome.container_id = out.container_id
                elif kind == "exec_id":
                    outcome.exec_id = out.exec_id
        except client.RpcError:
            if not outcome.detached:
                raise
        except KeyboardInterrupt:
            calls[0].cancel()
            raise
        finally:
            done.set()
            requests.put(None)
            for sig, handler in saved.items():
                signal.signal(sig, handler)
    return outcome


def _write(fd: int, data: bytes) -> None:
    """Write everything (os.write may be partial on a pipe or pty)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


