"""The chunk streams of a pull: decompression, diff id check, and the download/unpack hand-off."""
from __future__ import annotations

import gzip
import hashlib
import os
import threading

import pytest
import zstandard

from flotilla.runtime.errors import InvalidArgument
from flotilla.runtime.imaging.streaming import Aborted, ThreadedConsumer
from flotilla.runtime.imaging.streams import OUTPUT_CHUNK, LayerReader, plain_chunks


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


PLAIN = os.urandom(300_000) + b"text " * 100_000


@pytest.mark.parametrize("size", [1, 3, 4096, 1 << 20])
@pytest.mark.parametrize("kind", ["plain", "gzip", "gzip-two-members-padded", "zstd"])
def test_plain_chunks_any_chunking(kind, size) -> None:
    if kind == "plain":
        blob = PLAIN
    elif kind == "gzip":
        blob = gzip.compress(PLAIN)
    elif kind == "zstd":
        blob = zstandard.ZstdCompressor().compress(PLAIN)
    else:  # what `cat a.gz b.gz` and some tape-style writers produce
        blob = gzip.compress(PLAIN[:1000]) + gzip.compress(PLAIN[1000:]) + bytes(700)
    if size == 1 and kind != "plain":
        blob_pieces = pieces(blob[:5000], 1) + pieces(blob[5000:], 65536)  # byte-by-byte start: the magic sniffing
    else:
        blob_pieces = pieces(blob, size)
    assert b"".join(bytes(c) for c in plain_chunks(blob_pieces)) == PLAIN


def test_decompressed_pieces_are_bounded() -> None:
    """A small gzip that expands a lot comes out in bounded pieces, never all at once."""
    bomb = gzip.compress(bytes(64 << 20))
    assert len(bomb) < 100_000
    sizes = [len(c) for c in plain_chunks([bomb])]
    assert sum(sizes) == 64 << 20 and max(sizes) <= OUTPUT_CHUNK


@pytest.mark.parametrize("damage", ["truncated", "garbage-after", "bad-crc"])
def test_broken_gzip_is_invalid_argument(damage) -> None:
    blob = gzip.compress(PLAIN)
    if damage == "truncated":
        blob = blob[:-20]
    elif damage == "garbage-after":
        blob += b"not a gzip member"
    else:
        blob = blob[:-8] + bytes(4) + blob[-4:]  # the CRC32 in the trailer
    reader = LayerReader(pieces(blob, 65536), "layer x", sha(PLAIN))
    with pytest.raises(InvalidArgument, match="layer x is not a valid compressed tar"):
        reader.finish()


def test_layer_reader_diff_id() -> None:
    blob = gzip.compress(PLAIN)
    reader = LayerReader(pieces(blob, 65536), "layer x", sha(PLAIN))
    assert reader.read(100) == PLAIN[:100]
    reader.finish()  # the rest, unread by the caller, still counts
    assert reader.count == len(PLAIN)
    wrong = LayerReader(pieces(blob, 65536), "layer x", sha(b"other"))
    with pytest.raises(InvalidArgument, match="failed verification: expected diff id"):
        wrong.finish()


def test_consumer_gets_every_chunk_and_returns() -> None:
    consumer = ThreadedConsumer(lambda chunks: b"".join(chunks), depth=2)
    for piece in pieces(PLAIN, 1000):
        consumer.feed(piece)
    assert consumer.finish() == PLAIN


def test_consumer_failure_reaches_the_producer_without_deadlock() -> None:
    """The consumer fails on the first chunk; the producer (blocked on a full queue or not)
    gets that error from feed() and cancel() returns."""
    def target(chunks) -> None:
        next(iter(chunks))
        raise InvalidArgument("hostile tar")

    consumer = ThreadedConsumer(target, depth=1)
    with pytest.raises(InvalidArgument, match="hostile tar"):
        for _ in range(10_000):
            consumer.feed(b"x" * 10)
    consumer.cancel()
    assert not consumer._thread.is_alive()


def test_consumer_done_early_never_blocks_the_producer() -> None:
    consumer = ThreadedConsumer(lambda chunks: "nothing needed", depth=1)  # e.g. the layer appeared meanwhile
    for _ in range(100):
        consumer.feed(b"x")
    assert consumer.finish() == "nothing needed"


def test_cancel_aborts_the_consumer() -> None:
    seen: list[BaseException] = []
    started = threading.Event()

    def target(chunks) -> None:
        try:
            for _ in chunks:
                started.set()
        except Aborted as e:
            seen.append(e)
            raise

    consumer = ThreadedConsumer(target)
    consumer.feed(b"x")
    assert started.wait(10)
    consumer.cancel()
    consumer.cancel()  # error paths may cancel twice: harmless
    assert len(seen) == 1 and not consumer._thread.is_alive()
