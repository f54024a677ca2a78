"""Readers that check what flows through them: digest, size, compression.

A registry or an archive is untrusted; these wrappers let every byte be verified while it
streams to disk, so nothing is buffered whole in memory and a lie is caught before the blob
or layer is published under its name.
"""
from __future__ import annotations

import gzip
import hashlib
import io
from typing import BinaryIO, Callable

import zstandard

from ..errors import InvalidArgument

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CheckedReader(io.RawIOBase):
    """Passes bytes through while hashing them; refuses more than `limit` bytes.

    `on_bytes(n)` is called per chunk (progress); `verify()` checks the final digest and size.
    """

    def __init__(self, raw: BinaryIO, what: str, expected_digest: str = "", expected_size: int = -1,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.raw, self.what = raw, what
        self.expected_digest, self.expected_size = expected_digest, expected_size
        self.on_bytes = on_bytes
        self.hash = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(b))
        if not data:
            if 0 <= self.expected_size != self.count:
                raise InvalidArgument(f"{self.what} is truncated: got {self.count} of {self.expected_size} bytes")
            return 0
        self.count += len(data)
        if 0 <= self.expected_size < self.count:
            raise InvalidArgument(f"{self.what} is larger than the {self.expected_size} bytes its descriptor declares")
        self.hash.update(data)
        if self.on_bytes:
            self.on_bytes(len(data))
        n = len(data)
        b[:n] = data
        return n

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()

    def verify(self) -> str:
        if 0 <= self.expected_size != self.count:
            raise InvalidArgument(f"{self.what} is truncated: got {self.count} of {self.expected_size} bytes")
        if self.expected_digest and self.digest != self.expected_digest:
            raise InvalidArgument(f"{self.what} failed verification: expected {self.expected_digest}, content has {self.digest}")
        return self.digest


def decompressed(stream: BinaryIO) -> BinaryIO:
    """The plain tar inside `stream`, sniffing gzip or zstd from the magic bytes (as containerd)."""
    buffered = io.BufferedReader(stream, 1 << 20) if not isinstance(stream, io.BufferedReader) else stream  # type: ignore[arg-type]
    head = buffered.peek(4)[:4]
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    if head.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[return-value]
    return buffered  # type: ignore[return-value]
