"""Reaching a container's root filesystem from the host, for copy, export and commit.

A running container is reached through /proc/<pid>/root (its own view, mounts included), opened
only after a pidfd confirmed the pid is still the container's init. A stopped container's
overlay is mounted for the duration of one call under `<root>/tmpmounts/` and unmounted in
`finally`; after a crash `clean_temporary_mounts` (from Runtime.recover) removes what is left.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import kernel
from .errors import Conflict


def open_live_root(cid: str, pid: int, pid_start: int) -> int:
    """Open /proc/<pid>/root, checking through a pidfd that `pid` is still the container's init."""
    pidfd = kernel.open_pidfd(pid, pid_start)
    if pidfd is None:
        raise Conflict(f"container {cid[:12]} stopped while opening its filesystem: try again")
    try:
        root_fd = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if kernel.exited(pidfd):
            os.close(root_fd)
            raise Conflict(f"container {cid[:12]} stopped while opening its filesystem: try again")
        return root_fd
    finally:
        os.close(pidfd)


def container_mountpoints(pid: int) -> set[str]:
    """Mount points inside the container other than its root, as archive names ("proc", "dev/pts")."""
    points = set()
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ").strip("/")
            if point:
                points.add(point)
    return points


@contextmanager
def temporary_mount(tmpmounts: Path, cid: str, lower: list[str], upper: Path, work: Path,
                    binds: list[tuple[str, str, bool]] = ()) -> Iterator[int]:
    """Mount the container's overlay under `tmpmounts` and yield a directory fd of it.

    `binds` (source, destination, readonly) are mounted on top, as the container would see them
    (volumes for `docker cp`). Destinations are resolved inside the overlay with
    RESOLVE_IN_ROOT, so a symlink in the image cannot put a mount on the host; a destination
    missing from the image is skipped rather than created (the copy must not change the image).
    One lazy unmount of the overlay detaches the binds with it.
    """
    target = tmpmounts / f"{cid[:12]}-{secrets.token_hex(4)}"
    target.mkdir()
    try:
        kernel.mount_overlay(target, lower, upper, work)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for source, destination, readonly in binds:
                    _bind_inside(fd, source, destination, readonly)
                yield fd
            finally:
                os.close(fd)
        finally:
            kernel.unmount(target)
    finally:
        os.rmdir(target)


def _bind_inside(root_fd: int, source: str, destination: str, readonly: bool) -> None:
    try:
        dest = kernel.open_in_root(root_fd, destination, os.O_PATH)
    except FileNotFoundError:
        return
    try:
        kernel.bind_mount(source, f"/proc/self/fd/{dest}")
    finally:
        os.close(dest)
    if readonly:  # the old fd names the covered directory: resolve again to reach the new mount
        mounted = kernel.open_in_root(root_fd, destination, os.O_PATH)
        try:
            kernel.remount_readonly(f"/proc/self/fd/{mounted}")
        finally:
            os.close(mounted)


def clean_temporary_mounts(tmpmounts: Path) -> None:
    """Unmount and remove what a crash left under `tmpmounts`."""
    for point in kernel.mounts_under(tmpmounts):
        kernel.unmount(Path(point))
    for entry in tmpmounts.iterdir():
        os.rmdir(entry)
