"""Content-addressed blob store: `<root>/blobs/sha256/<hex>`.

Layers, image configs and manifests all live here under the sha256 of their bytes. A blob is
written to a temp file while it is hashed, checked against the expected digest, fsynced and
renamed into place, so a blob file that exists is always complete and correct.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO

from .errors import InvalidArgument, NotFound
from .fsutil import fsync_dir, sweep_temps

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20


def check_digest(digest: str) -> str:
    """Return the hex part of a `sha256:<64 hex>` digest or refuse it."""
    if not _DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: expected sha256: followed by 64 lowercase hex digits")
    return digest[7:]


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ContentStore:
    """Blobs by digest; writes are verified and atomic, reads are plain files."""

    SMALL = 64 * 1024  # image configs and manifests: read on every container create and start
    CACHED = 512

    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)
        # Small blobs by digest. A blob never changes (it is named by its hash and written only
        # if the hash matches), so the only invalidation is its deletion.
        self._small: dict[str, bytes] = {}

    def path(self, digest: str) -> Path:
        return self.dir / check_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def read(self, digest: str) -> bytes:
        data = self._small.get(digest)
        if data is not None:
            return data
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None
        if len(data) <= self.SMALL:
            if len(self._small) >= self.CACHED:
                self._small.clear()
            self._small[digest] = data
        return data

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None

    def write(self, data: bytes, expected: str | None = None) -> str:
        """Store bytes; returns their digest."""
        import io

        return self.write_stream(io.BytesIO(data), expected)

    def write_stream(self, stream: BinaryIO, expected: str | None = None) -> str:
        """Store everything `stream` yields; refuse (and keep nothing) if `expected` does not match."""
        if expected is not None:
            check_digest(expected)
        h = hashlib.sha256()
        tmp = self.dir / f".tmp-{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                while chunk := stream.read(_CHUNK):
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            digest = "sha256:" + h.hexdigest()
            if expected is not None and digest != expected:
                raise InvalidArgument(f"digest mismatch: expected {expected}, content has {digest}")
            os.rename(tmp, self.dir / h.hexdigest())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.dir)
        return digest

    def delete(self, digest: str) -> None:
        self._small.pop(digest, None)
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> list[str]:
        return ["sha256:" + p.name for p in self.dir.iterdir() if not p.name.startswith(".")]

    def sweep(self) -> None:
        """Drop temp files of writes interrupted by a crash."""
        sweep_temps(self.dir)
