"""The wire format of the agent's CLI socket: the Runtime service's messages without HTTP/2.

Why a second transport: `import grpc` alone costs a CLI process ~100 ms of CPU, more than a
whole `swarmctl run --rm` may take. The agent therefore serves the same Runtime RPCs (the same
servicer methods, the same protobuf messages) on a second unix socket, next to the gRPC one,
with this framing; `swarmctl` needs only the standard library and protobuf to speak it. The
gRPC socket stays the public API for programs. This module is shared by both ends and imports
neither grpc nor protobuf.

A frame is a 4-byte big-endian payload length, one kind byte, then the payload:

    client -> agent   CALL (the method's short name, e.g. b"Run"; always the first frame)
                      MESSAGE (one serialized request; exactly one for a unary request)
                      HALF_CLOSE (client streams only: no more requests)
    agent -> client   MESSAGE (one serialized response; exactly one for a unary response)
                      STATUS (always the last frame: gRPC's status code, details, trailers)

Closing the connection before the STATUS frame cancels the call, as a gRPC cancel does.
"""
from __future__ import annotations

import enum
import struct

CALL, MESSAGE, HALF_CLOSE, STATUS = 1, 2, 3, 4
KINDS = {CALL: "CALL", MESSAGE: "MESSAGE", HALF_CLOSE: "HALF_CLOSE", STATUS: "STATUS"}
HEADER = struct.Struct(">IB")
MAX_PAYLOAD = 16 << 20  # as the gRPC socket's grpc.max_receive_message_length
MAX_METHOD = 128
SOCKET_SUFFIX = ".cli"
_U32 = struct.Struct(">I")


class StatusCode(enum.IntEnum):
    """gRPC's status codes (same names and numbers), so one error mapping serves both transports."""
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class FrameError(Exception):
    """The peer broke the framing (oversize length, unknown kind, malformed status)."""


def cli_socket_path(grpc_socket: str) -> str:
    """The CLI socket that belongs to a gRPC socket: the same path plus `.cli`."""
    return grpc_socket + SOCKET_SUFFIX


def encode(kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind) + payload


def parse_header(header: bytes, limit: int = MAX_PAYLOAD) -> tuple[int, int]:
    """(kind, payload length) of a frame header; refuses what no honest peer sends."""
    length, kind = HEADER.unpack(header)
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind}")
    if length > limit:
        raise FrameError(f"frame of {length} bytes is over the limit of {limit} bytes")
    return kind, length


def encode_status(code: int, details: str = "", trailers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A STATUS frame: code, then details and each trailer key and value as length-prefixed UTF-8."""
    parts = [_U32.pack(code)]
    for text in (details, *(item for pair in trailers for item in pair)):
        data = text.encode()
        parts += [_U32.pack(len(data)), data]
    return encode(STATUS, b"".join(parts))


def decode_status(payload: bytes) -> tuple[StatusCode, str, tuple[tuple[str, str], ...]]:
    """The inverse of `encode_status`; FrameError if the payload is not one."""
    try:
        code = StatusCode(_U32.unpack_from(payload)[0])
        texts, offset = [], _U32.size
        while offset < len(payload):
            (size,) = _U32.unpack_from(payload, offset)
            offset += _U32.size
            if offset + size > len(payload):
                raise FrameError("truncated status frame")
            texts.append(payload[offset:offset + size].decode())
            offset += size
    except (struct.error, ValueError) as exc:  # ValueError: unknown code or bad UTF-8
        raise FrameError(f"malformed status frame: {exc}") from None
    if not texts or len(texts) % 2 == 0:
        raise FrameError("malformed status frame: details and key/value trailers expected")
    return code, texts[0], tuple(zip(texts[1::2], texts[2::2]))
