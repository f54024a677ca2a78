"""Read-only view of an image's merged filesystem, computed from its layer dirs without mounting.

`COPY --from=<stage>` and the checks of COPY's destination need to see files of an image as a
container would. Mounting an overlay in the builder's own mount namespace could leak a mount
on a crash, so this resolves paths the way overlayfs does: topmost layer first, a 0/0 char
device hides the name below, an opaque dir (`trusted.overlay.opaque=y`) hides everything below.
Symlinks are never followed (a path through a symlink is "not found"), so nothing leaves the layers.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .. import archive


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, archive.OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class LayerView:
    """Merged view over `lower_dirs` (topmost first)."""

    def __init__(self, lower_dirs: list[str]) -> None:
        self.layers = [Path(d) for d in lower_dirs]

    def lookup(self, rel: str) -> tuple[Path, os.stat_result] | None:
        """The host path and stat of `rel` in the merged view, or None if absent or hidden."""
        parts = archive.split_path(rel, "path")
        if not parts:
            return (self.layers[0], os.lstat(self.layers[0])) if self.layers else None
        for layer in self.layers:
            cur = layer
            visible = True
            for i, part in enumerate(parts):
                cur = cur / part
                try:
                    st = os.lstat(cur)
                except (FileNotFoundError, NotADirectoryError):
                    visible = False
                    break
                if _is_whiteout(st):
                    return None
                if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                    return None  # a non-directory in the path hides everything below
            if visible:
                return cur, st
            # Absent here: an opaque ancestor in this layer hides the lower layers.
            cur = layer
            for part in parts[:-1]:
                cur = cur / part
                if cur.is_dir() and not cur.is_symlink() and _opaque(cur):
                    return None
        return None

    def is_dir(self, rel: str) -> bool:
        found = self.lookup(rel)
        return found is not None and stat.S_ISDIR(found[1].st_mode)

    def listdir(self, rel: str) -> list[str]:
        """Names in a merged directory, whiteouts and opaque dirs honoured."""
        names: dict[str, bool] = {}
        parts = archive.split_path(rel, "path")
        for layer in self.layers:
            d = layer.joinpath(*parts)
            if not d.is_dir() or d.is_symlink():
                if d.exists() or d.is_symlink():
                    break  # a file here hides lower dirs
                continue
            for name in os.listdir(d):
                if name not in names:
                    names[name] = not _is_whiteout(os.lstat(d / name))
            if _opaque(d):
                break
        return sorted(n for n, visible in names.items() if visible)

    def walk(self, rel: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        """Every entry below `rel` (relative names), parents before children."""
        for name in self.listdir(rel):
            child = f"{rel.rstrip('/')}/{name}" if rel.strip("/") else name
            found = self.lookup(child)
            if found is None:
                continue
            yield child, found[0], found[1]
            if stat.S_ISDIR(found[1].st_mode):
                yield from self.walk(child)
