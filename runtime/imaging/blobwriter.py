"""One blob written into the content store from chunks, verified on the way in.

`ContentStore.write_stream` reads a file object; a pull instead has chunks in hand that it
also feeds to the layer unpacker, so it pushes them here. Each byte is hashed once, the size
is checked as the bytes arrive (a registry that sends more than the descriptor says is cut
off at once), and the file is fsynced and renamed into place only after both match, so a
blob under its final name is always complete and correct. The temp file is a `.tmp-` name
in the store's directory, which the store's sweep removes after a crash.
"""
from __future__ import annotations

import hashlib
import os
import secrets

from ..errors import InvalidArgument
from ..store import ContentStore, check_digest
from .streams import Chunk


class BlobWriter:
    """`write(chunk)`... then `commit()` (verify, fsync, rename) or `discard()`."""

    def __init__(self, content: ContentStore, digest: str, size: int, what: str) -> None:
        self.final = content.dir / check_digest(digest)
        self.digest, self.size, self.what = digest, size, what
        self.count = 0
        self.hash = hashlib.sha256()
        self.tmp = content.dir / f".tmp-{secrets.token_hex(8)}"
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def write(self, chunk: Chunk) -> None:
        self.count += len(chunk)
        if self.count > self.size:
            raise InvalidArgument(f"{self.what} is larger than the {self.size} bytes its descriptor declares")
        self.hash.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view):]

    def commit(self) -> None:
        """Check size and digest, make the bytes durable, publish under the digest.

        The caller fsyncs the store's directory once before anything references the blob
        (one directory fsync per pull rather than one per blob).
        """
        if self.count != self.size:
            raise InvalidArgument(f"{self.what} is truncated: got {self.count} of {self.size} bytes")
        got = "sha256:" + self.hash.hexdigest()
        if got != self.digest:
            raise InvalidArgument(f"{self.what} failed verification: expected {self.digest}, content has {got}")
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        os.rename(self.tmp, self.final)

    def discard(self) -> None:
        """Drop the temp file (after a failure); harmless after `commit`."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)
