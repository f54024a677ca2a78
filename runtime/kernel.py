"""Small kernel interfaces the runtime uses in-process: mounts, RESOLVE_IN_ROOT opens, pidfds.

mount/umount2/openat2 come from the shim helper's wrapper (`native.syscalls`). Process
identity is (pid, start time from /proc/<pid>/stat): a pidfd is only handed out after checking
that the pid still belongs to the process we started, so a recycled pid is never signalled.
"""
from __future__ import annotations

import os
import select
from pathlib import Path

from .native import syscalls


def mount_overlay(target: Path, lower: list[str], upper: Path, work: Path) -> None:
    """Mount an overlay of `lower` (topmost first) with `upper`/`work` at `target`."""
    opts = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    syscalls.mount("overlay", target, "overlay", syscalls.MS_NOSUID | syscalls.MS_NODEV, opts)


def bind_mount(source: str, target: str) -> None:
    """Bind `source` (recursively) onto `target`."""
    syscalls.mount(source, target, None, syscalls.MS_BIND | syscalls.MS_REC)


def remount_readonly(target: str) -> None:
    """Make the bind mount at `target` read-only (a bind mount is made read-only in a second call)."""
    syscalls.mount(None, target, None, syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY)


def unmount(target: Path) -> None:
    """Detach a mount (lazy, so a busy mount still disappears from the tree at once)."""
    syscalls.umount2(target, syscalls.MNT_DETACH)


def mounts_under(prefix: Path) -> list[str]:
    """Mount points below `prefix` in this mount namespace, deepest first."""
    found = []
    base = str(prefix).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(base):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """openat2(RESOLVE_IN_ROOT): `path` (symlinks and `..` included) can never leave `root_fd`."""
    return syscalls.openat2(root_fd, path, flags, 0, syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])


def takes_signal(pid: int, sig: int) -> bool:
    """Whether `sig` sent to `pid`, a pid namespace's init, can have any effect.

    The kernel drops a signal sent to a namespace's init that the init neither catches nor
    blocks (`sig_task_ignored`: SIGNAL_UNKILLABLE with SIG_DFL, or SIG_IGN); only SIGKILL and
    SIGSTOP from an ancestor namespace get through. So a busybox `sleep` as pid 1 never sees a
    SIGTERM, and waiting out a stop's grace period for it changes nothing but the time. Read from
    /proc/<pid>/status (SigBlk, SigCgt); a process that is gone counts as taking it.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return True
    masks = {line[:6]: int(line[7:].strip(), 16) for line in lines if line[:6] in (b"SigBlk", b"SigCgt")}
    bit = 1 << (sig - 1)
    return len(masks) < 2 or bool((masks[b"SigBlk"] | masks[b"SigCgt"]) & bit)


def open_pidfd(pid: int, started: int) -> int | None:
    """A pidfd for `pid` if it is still the process that started at `started`, else None."""
    if pid <= 0:
        return None
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    if start_time(pid) != started or exited(fd):
        os.close(fd)
        return None
    return fd


def exited(pidfd: int, timeout: float | None = 0) -> bool:
    """Whether the process behind `pidfd` has ended (waiting up to `timeout` seconds, None: forever).

    poll, not select: an agent with many containers holds descriptors above FD_SETSIZE (1024).
    """
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))
