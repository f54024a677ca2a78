"""Start helper processes that die with their parent, without running Python in the child.

PR_SET_PDEATHSIG set from a `preexec_fn` runs Python (and ctypes' dlopen) between fork and
exec. In a process with threads (gRPC's pollers, the asyncio loop's executors) that can
deadlock on a lock another thread held at fork time: CI saw a dockerd child hang there,
printing only gRPC's fork handler's complaint. util-linux's `setpriv --pdeathsig` sets the
same flag in the exec'd helper instead, so `subprocess` can use vfork and run no Python.
"""
from __future__ import annotations

import shutil

SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


def dying_with_parent(argv: list[str], signal_name: str = "KILL") -> list[str]:
    """`argv` wrapped so that the process gets SIG`signal_name` when the thread that started it exits."""
    return [SETPRIV, "--pdeathsig", signal_name, "--", *argv]
