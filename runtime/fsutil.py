"""Crash-safe file writes: everything the runtime records goes through here.

A reader (or the runtime after kill -9) sees either the old file or the new one, never a torn
write: data goes to a temp file in the same directory, is fsynced, and is renamed over the target.
"""
from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename or create in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `path` with `data` atomically (temp file, fsync, rename).

    The directory is not fsynced here: readers and a crashed-and-restarted process always see
    the old or the new file, and after a power loss at worst the previous version. Callers that
    publish something that must survive a power loss call `fsync_dir` themselves.

    `durable=False` skips the fsync: the rename alone is atomic for readers and survives a kill -9
    of any process (the data is in the page cache); only a power loss may lose or truncate it, so
    it is for state that nothing needs after a reboot (a container that never ran).
    """
    tmp = path.with_name(f".tmp-{path.name}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any, durable: bool = True) -> None:
    """Replace `path` with the JSON encoding of `obj` atomically (see atomic_write_bytes).

    Compact, as Docker's own state files: with `indent` Python's json falls back to its pure-Python
    encoder, ~7x slower (~0.5 ms for a container record, saved three times per container run).
    """
    atomic_write_bytes(path, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(), durable=durable)


def read_json(path: Path) -> Any:
    """Read a JSON file written by atomic_write_json."""
    with open(path, "rb") as f:
        return json.load(f)


def temp_sibling(path: Path) -> Path:
    """A fresh temp path next to `path` (same filesystem, so a rename can publish it)."""
    return path.with_name(f".tmp-{path.name}-{secrets.token_hex(4)}")


def to_trash(path: Path) -> Path | None:
    """Rename a directory tree to a `.trash-` name (the object is gone); None if it did not exist."""
    if not path.exists():
        return None
    trash = path.with_name(f".trash-{path.name}-{secrets.token_hex(4)}")
    os.rename(path, trash)
    return trash


def remove_tree(path: Path) -> None:
    """Delete a directory tree crash-safely: rename it to a trash name first, then delete.

    After a crash midway the half-deleted tree carries a `.trash-` name that `sweep_temps`
    removes, so no half-removed object is ever mistaken for a live one.
    """
    trash = to_trash(path)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


class Reaper:
    """Deletes trashed trees on a thread of its own, so that the caller does not wait for them.

    Deleting a container's bundle is ~15 unlinks and rmdirs, ~12 ms on this VM's ext4, while
    the object is already gone once `to_trash` renamed it. A crash or exit before the thread is
    done leaves `.trash-` names, which `sweep_temps` removes at the next start.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[Path] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def delete(self, trash: Path) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)
                self._thread.start()
        self._queue.put(trash)

    def _run(self) -> None:
        while True:
            trash = self._queue.get()
            try:
                shutil.rmtree(trash, ignore_errors=True)
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        """Block until every tree handed over so far is deleted."""
        self._queue.join()


def sweep_temps(directory: Path) -> None:
    """Remove leftovers (`.tmp-*`, `.trash-*`) of operations interrupted by a crash."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.name.startswith((".tmp-", ".trash-")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
