"""The build context: files a Dockerfile may COPY, after `.dockerignore`, and their checksums.

The checksum of what a COPY/ADD reads goes into the step's cache key (as Docker's builder
does), so editing one source file invalidates exactly the steps that copy it.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgument
from .dockerfile import IgnoreRules, glob_match, has_glob

ALWAYS_KEPT = ("Dockerfile", ".dockerignore")


@dataclass(frozen=True)
class Source:
    """One matched source: `rel` path in the context, host `path`, whether it was named directly."""

    rel: str
    path: Path


class BuildContext:
    """A context directory with its ignore rules; never follows a path out of the directory."""

    def __init__(self, root: Path, dockerignore: str | None = None) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise InvalidArgument(f"build context {root} is not a directory")
        text = dockerignore
        if text is None:
            ign = self.root / ".dockerignore"
            text = ign.read_text() if ign.is_file() else ""
        self.rules = IgnoreRules.parse(text)
        self._files: list[str] | None = None

    def files(self) -> list[str]:
        """All non-ignored entries (relative, `/`-separated), parents before children."""
        if self._files is None:
            out: list[str] = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                rel_dir = os.path.relpath(dirpath, self.root)
                rel_dir = "" if rel_dir == "." else rel_dir
                dirnames.sort()
                for name in sorted(dirnames + filenames):
                    rel = f"{rel_dir}/{name}" if rel_dir else name
                    if not self.rules.ignored(rel) or rel in ALWAYS_KEPT:
                        out.append(rel)
            self._files = out
        return self._files

    def match(self, pattern: str, line: int) -> list[Source]:
        """Sources for a COPY/ADD argument: an exact path or a wildcard, relative to the context."""
        parts = [p for p in pattern.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise InvalidArgument(f"Dockerfile:{line}: forbidden path outside the build context: {pattern}")
        rel = "/".join(parts)
        if not rel:
            return [Source("", self.root)]
        if has_glob(rel):
            found = [Source(f, self.root / f) for f in self.files() if glob_match(rel, f)]
        else:
            p = self.root / rel
            found = [Source(rel, p)] if (p.exists() or p.is_symlink()) and (rel in self.files()) else []
        if not found:
            raise InvalidArgument(f"Dockerfile:{line}: COPY failed: file not found in build context or excluded by .dockerignore: {pattern}")
        return found

    def below(self, rel: str) -> list[str]:
        """Non-ignored entries inside directory `rel` (relative to `rel`)."""
        prefix = f"{rel}/" if rel else ""
        return [f[len(prefix):] for f in self.files() if f.startswith(prefix) and f != rel]

    def checksum(self, sources: list[Source]) -> str:
        """Content hash of everything the sources cover: names, modes, file bytes, link targets."""
        h = hashlib.sha256()
        for src in sources:
            entries = [src.rel] + [f"{src.rel}/{f}" if src.rel else f for f in self.below(src.rel)] if src.path.is_dir() and not src.path.is_symlink() else [src.rel]
            for rel in entries:
                p = self.root / rel
                st = os.lstat(p)
                h.update(f"{rel}\0{stat.S_IMODE(st.st_mode)}\0{stat.S_IFMT(st.st_mode)}\0".encode())
                if stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
                elif stat.S_ISLNK(st.st_mode):
                    h.update(os.readlink(p).encode())
                h.update(b"\0")
        return "sha256:" + h.hexdigest()
