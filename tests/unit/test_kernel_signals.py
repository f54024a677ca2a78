"""`kernel.takes_signal`: read from /proc/<pid>/status, the masks the kernel decides by."""
from __future__ import annotations

import signal
import subprocess
import sys

from flotilla.runtime import kernel

HANDLER = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: None); print(1, flush=True); time.sleep(60)"
BLOCKED = ("import signal, sys, time; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
           "print(1, flush=True); time.sleep(60)")
DEFAULT = "import time; print(1, flush=True); time.sleep(60)"


def _child(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"1\n"  # set up
    return proc


def test_caught_or_blocked_signals_are_taken_default_ones_are_not():
    procs = {name: _child(code) for name, code in (("handler", HANDLER), ("blocked", BLOCKED), ("default", DEFAULT))}
    try:
        assert kernel.takes_signal(procs["handler"].pid, signal.SIGTERM)
        assert kernel.takes_signal(procs["blocked"].pid, signal.SIGTERM)
        assert not kernel.takes_signal(procs["default"].pid, signal.SIGTERM)
        assert kernel.takes_signal(procs["default"].pid, signal.SIGINT)  # Python's own SIGINT handler
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    assert kernel.takes_signal(procs["default"].pid, signal.SIGTERM)  # gone: counts as taking it
