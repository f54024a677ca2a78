"""Bridge a shim attach socket (frame protocol) and a gRPC bidirectional stream.

The shim's protocol (docs/architecture.md): every message is 1 byte type, 3 zero bytes, a
4-byte big-endian length and the payload. Shim to client: 1 stdout, 2 stderr, 3 exit (decimal
text). Client to shim: 0 stdin, 4 stdin close, 5 resize (rows, cols as big-endian u16).
Everything here is asyncio on a non-blocking socket, so an interactive session costs the agent
no thread.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

from flotilla.proto import runtime_pb2 as pb

STDIN, STDOUT, STDERR, EXIT, CLOSE_STDIN, RESIZE = 0, 1, 2, 3, 4, 5
_HEADER = struct.Struct(">B3xI")


def frame(kind: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def input_frame(msg: pb.StreamInput) -> bytes | None:
    """The shim frame for one client message, or None for messages that carry nothing for it."""
    kind = msg.WhichOneof("item")
    if kind == "stdin":
        return frame(STDIN, msg.stdin)
    if kind == "close_stdin":
        return frame(CLOSE_STDIN)
    if kind == "resize":
        return frame(RESIZE, struct.pack(">HH", min(msg.resize.rows, 0xFFFF), min(msg.resize.cols, 0xFFFF)))
    return None


async def pump(sock: socket.socket, requests: AsyncIterator[pb.StreamInput]) -> AsyncIterator[pb.StreamOutput]:
    """Forward client input to the shim and yield the shim's output until its exit frame.

    Yields nothing more once the exit frame has been sent: the exit code is the last message.
    When the socket closes without one (the shim was killed), the iterator simply ends and
    the caller decides what exit code to report.
    """
    sock.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=sock)

    async def forward() -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            async for msg in requests:
                data = input_frame(msg)
                if data is not None:
                    writer.write(data)
                    await writer.drain()

    forwarder = asyncio.create_task(forward())
    try:
        while True:
            try:
                kind, length = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                payload = await reader.readexactly(length) if length else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if kind == STDOUT:
                yield pb.StreamOutput(stdout=payload)
            elif kind == STDERR:
                yield pb.StreamOutput(stderr=payload)
            elif kind == EXIT:
                yield pb.StreamOutput(exit_code=int(payload.decode() or 0))
                return
    finally:
        forwarder.cancel()
        with contextlib.suppress(BaseException):
            await forwarder
        writer.close()
