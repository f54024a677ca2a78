"""Streams that check what flows through them: digest, size, compression.

A registry or an archive is untrusted; these let every byte be verified while it streams to
disk, so nothing is buffered whole in memory and a lie is caught before the blob or layer is
published under its name. Data moves as chunks (buffers of up to 1 MiB) rather than file
objects: a chunk that arrives from the network is hashed, written to the content store and
handed to the unpacker as the same buffer, each byte hashed once per digest it must match
(sha256 runs at ~200-300 MB/s on this class of machine and dominates a pull's CPU time).
"""
from __future__ import annotations

import hashlib
import zlib
from typing import Callable, Iterable, Iterator

import zstandard

from ..errors import InvalidArgument

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1 << 20
# Largest piece of decompressed output produced at once: bounds memory against a
# decompression bomb (a few kB of gzip can expand to gigabytes).
OUTPUT_CHUNK = 4 << 20

Chunk = bytes | bytearray | memoryview


def file_chunks(f, size: int = CHUNK) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    """Chunks of an open binary file, read `size` bytes at a time."""
    while chunk := f.read(size):
        yield chunk


def _sniffed(chunks: Iterator[Chunk]) -> tuple[bytes, Iterator[Chunk]]:
    """The first 4 bytes (or fewer at end of stream) and the whole stream, nothing consumed."""
    head: list[Chunk] = []
    have = 0
    for chunk in chunks:
        if len(chunk):
            head.append(chunk)
            have += len(chunk)
        if have >= 4:
            break
    first = b"".join(bytes(c) for c in head)

    def replay() -> Iterator[Chunk]:
        if first:
            yield first
        yield from chunks

    return first[:4], replay()


def _gunzip(chunks: Iterable[Chunk]) -> Iterator[bytes]:
    """Decompress gzip members (several may follow each other, zero padding after them is
    allowed, as in Python's and Go's readers); zlib checks each member's CRC and length."""
    d: zlib._Decompress | None = zlib.decompressobj(31)
    for chunk in chunks:
        data: Chunk = chunk
        while len(data):
            if d is None:  # between members
                data = bytes(data).lstrip(b"\0")
                if not data:
                    break
                d = zlib.decompressobj(31)
            out = d.decompress(data, OUTPUT_CHUNK)
            if out:
                yield out
            while len(out) == OUTPUT_CHUNK or d.unconsumed_tail:
                out = d.decompress(d.unconsumed_tail, OUTPUT_CHUNK)
                if out:
                    yield out
            if d.eof:
                data, d = d.unused_data, None
            else:
                data = b""
    if d is not None:
        raise EOFError("compressed stream ended before the end-of-stream marker")


class _ChunkFile:
    """`read(n)` over chunks, for zstandard's stream reader (it wants a file)."""

    def __init__(self, chunks: Iterable[Chunk]) -> None:
        self.chunks = iter(chunks)
        self.buf = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        if not self.buf:
            self.buf = memoryview(next(self.chunks, b""))
        out, self.buf = self.buf[:n] if n >= 0 else self.buf, self.buf[n:] if n >= 0 else memoryview(b"")
        return bytes(out)


def _unzstd(chunks: Iterable[Chunk]) -> Iterator[bytes]:
    reader = zstandard.ZstdDecompressor().stream_reader(_ChunkFile(chunks), read_across_frames=True)
    while out := reader.read(OUTPUT_CHUNK):
        yield out


def plain_chunks(chunks: Iterable[Chunk]) -> Iterator[Chunk]:
    """The uncompressed tar inside a layer blob's chunks, sniffing gzip or zstd from the magic
    bytes (as containerd does: media types of real images are not always truthful)."""
    head, stream = _sniffed(iter(chunks))
    if head.startswith(GZIP_MAGIC):
        return _gunzip(stream)
    if head.startswith(ZSTD_MAGIC):
        return _unzstd(stream)
    return stream


class LayerReader:
    """The plain tar of a layer as a file-like `read(n)`, hashed as it is produced (its diff id).

    `tarfile` in stream mode only needs `read`; serving slices of the decompressed chunks
    avoids the extra copy an `io.BufferedReader` would make. `finish()` reads what the tar
    reader left (its end-of-archive padding counts for the diff id too) and checks the digest.
    """

    def __init__(self, chunks: Iterable[Chunk], what: str, expected_digest: str,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.what, self.expected_digest, self.on_bytes = what, expected_digest, on_bytes
        self.hash = hashlib.sha256()
        self.count = 0
        self._chunks = plain_chunks(chunks)
        self._buf = memoryview(b"")

    def _next(self) -> bool:
        try:
            chunk = next(self._chunks, None)
        except (zlib.error, zstandard.ZstdError, EOFError) as e:
            raise InvalidArgument(f"{self.what} is not a valid compressed tar: {e}") from None
        if chunk is None:
            return False
        self.hash.update(chunk)
        self.count += len(chunk)
        if self.on_bytes:
            self.on_bytes(len(chunk))
        self._buf = memoryview(chunk)
        return True

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            if not self._next():
                return b""
        if n < 0:
            n = len(self._buf)
        out, self._buf = self._buf[:n], self._buf[n:]
        return bytes(out)

    def finish(self) -> None:
        """Consume the rest and verify the diff id; raise InvalidArgument on a mismatch."""
        self._buf = memoryview(b"")
        while self._next():
            pass
        digest = "sha256:" + self.hash.hexdigest()
        if digest != self.expected_digest:
            raise InvalidArgument(f"{self.what} failed verification: expected diff id {self.expected_digest}, content has {digest}")
