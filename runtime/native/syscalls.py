"""System calls Python's standard library lacks, from the cffi extension `_native`.

`mount` / `umount2` for the runtime's own mounts, and `openat2` with RESOLVE_IN_ROOT so files
can be copied into or out of a running container through /proc/<pid>/root without a symlink
in the container ever leading outside it. Errors are raised as OSError with errno and path.
"""
from __future__ import annotations

import os

from flotilla.runtime.native._native import ffi, lib

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
# umount2(2) flags
MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8
# openat2(2) resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


def _check(result: int, *paths: str | None) -> int:
    if result < 0:
        err = ffi.errno
        names = [p for p in paths if p]
        raise OSError(err, os.strerror(err), *names[:1], None, *names[1:2])
    return result


def _c(value: str | os.PathLike[str] | None) -> object:
    return ffi.NULL if value is None else os.fsencode(value)


def mount(source: str | None, target: str | os.PathLike[str], fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    """mount(2); OSError names the source and target."""
    _check(lib.mount(_c(source), _c(target), _c(fstype), flags, _c(data)),
           os.fspath(source) if source else None, os.fspath(target))


def umount2(target: str | os.PathLike[str], flags: int = 0) -> None:
    """umount2(2); OSError names the target."""
    _check(lib.umount2(_c(target), flags), os.fspath(target))


def openat2(dirfd: int, path: str | os.PathLike[str], flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): open `path` relative to `dirfd` under the `resolve` restrictions; returns an fd.

    O_CLOEXEC is always added. With RESOLVE_IN_ROOT, `dirfd` acts as "/" for every absolute path
    and "..", which is how a container's files are reached safely from the host.
    """
    return _check(lib.flotilla_openat2(dirfd, _c(path), flags | os.O_CLOEXEC, mode, resolve), os.fspath(path))
