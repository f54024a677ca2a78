"""The Runtime service over the agent's CLI socket (`flotilla.proto.framing`), without grpcio.

Importing grpcio costs ~100 ms of CPU, more than the rest of a `swarmctl run --rm`; this client
needs only the standard library and the generated messages. Its calls behave as the gRPC
stub's do, as far as the commands use them: unary calls return the response, server streams are
iterators with `cancel()`, client streams consume a request iterator (on a thread of their own
when the call is bidirectional, as grpcio does), and a failure raises `CallError`, which offers
`code()`, `details()` and `trailing_metadata()` like `grpc.RpcError`. One call is one connection.
"""
from __future__ import annotations

import _socket  # not `socket`: its enum conversions and selectors cost ~4 ms of every CLI start
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from flotilla.proto import framing
from flotilla.proto.framing import StatusCode


class CallError(Exception):
    """A call that ended with a non-OK status (or could not reach the agent)."""

    def __init__(self, code: StatusCode, details: str, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailers


class _Connection:
    """One call's socket: frames out, frames in, and a cancel that any thread may call."""

    def __init__(self, path: str) -> None:
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise CallError(StatusCode.UNAVAILABLE, f"cannot connect to {path}: {exc.strerror}") from None
        self.cancelled = False

    def send(self, data: bytes) -> bool:
        """Send; False once the agent has closed its side (its status frame tells why)."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            try:
                chunk = self.sock.recv(min(size - len(data), 1 << 20))
            except OSError:
                chunk = b""
            if not chunk:
                if self.cancelled:
                    raise CallError(StatusCode.CANCELLED, "Locally cancelled by application!")
                raise CallError(StatusCode.UNAVAILABLE, "the agent closed the connection before the call ended")
            data += chunk
        return bytes(data)

    def next_message(self) -> bytes | None:
        """The next MESSAGE payload; None after an OK status; CallError for any other status."""
        try:
            kind, length = framing.parse_header(self._exactly(framing.HEADER.size))
            payload = self._exactly(length) if length else b""
            if kind == framing.MESSAGE:
                return payload
            if kind != framing.STATUS:
                raise framing.FrameError(f"unexpected {framing.KINDS[kind]} frame from the agent")
            code, details, trailers = framing.decode_status(payload)
        except framing.FrameError as exc:
            raise CallError(StatusCode.INTERNAL, f"broken reply on the CLI socket: {exc}") from None
        if code != StatusCode.OK:
            raise CallError(code, details, trailers)
        return None

    def cancel(self) -> None:
        self.cancelled = True
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


class ResponseStream:
    """A server stream's responses, in order; `cancel()` ends it (from any thread)."""

    def __init__(self, conn: _Connection, response: Any) -> None:
        self._conn, self._response = conn, response

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            payload = self._conn.next_message()
        except BaseException:
            self._conn.close()
            raise
        if payload is None:
            self._conn.close()
            raise StopIteration
        return self._response.FromString(payload)

    def cancel(self) -> None:
        self._conn.cancel()


class SocketMethods:
    """The Runtime service's methods as callables, made on first use from the service descriptor."""

    def __init__(self, path: str, pb: Any) -> None:
        self._path = path
        self._pb = pb
        self._service = pb.DESCRIPTOR.services_by_name["Runtime"]

    def __getattr__(self, name: str) -> Any:
        method = self._service.methods_by_name.get(name)
        if method is None:
            raise AttributeError(f"the Runtime service has no method {name!r}")
        response = getattr(self._pb, method.output_type.name)
        opening = framing.encode(framing.CALL, name.encode())
        path = self._path

        def unary(request: Any) -> Any:
            return _single(_start(path, opening + _message(request)), response)

        def server_stream(request: Any) -> ResponseStream:
            return ResponseStream(_start(path, opening + _message(request)), response)

        def client_stream(requests: Iterable[Any]) -> Any:
            conn = _start(path, opening)
            _send_all(conn, requests)
            return _single(conn, response)

        def bidi(requests: Iterable[Any]) -> ResponseStream:
            # the opening request (Run's spec...) goes with the CALL frame: the agent can start
            # creating the container while the sender thread is still being started
            requests = iter(requests)
            first = next(requests, None)
            conn = _start(path, opening + (_message(first) if first is not None else b""))
            threading.Thread(target=_send_all, args=(conn, requests), name="requests", daemon=True).start()
            return ResponseStream(conn, response)

        call = {(False, False): unary, (False, True): server_stream, (True, False): client_stream,
                (True, True): bidi}[(method.client_streaming, method.server_streaming)]
        setattr(self, name, call)
        return call


def _message(request: Any) -> bytes:
    return framing.encode(framing.MESSAGE, request.SerializeToString())


def _start(path: str, data: bytes) -> _Connection:
    conn = _Connection(path)
    conn.send(data)  # a refusal shows up as the agent's status frame
    return conn


def _send_all(conn: _Connection, requests: Iterable[Any]) -> None:
    """Send every request, then HALF_CLOSE; stop early if the agent has already answered."""
    for request in requests:
        if not conn.send(_message(request)):
            return
    conn.send(framing.encode(framing.HALF_CLOSE))


def _single(conn: _Connection, response: Any) -> Any:
    """A unary response: one MESSAGE, then an OK status."""
    try:
        payload = conn.next_message()
        if payload is None:
            raise CallError(StatusCode.INTERNAL, "the agent sent no response")
        if conn.next_message() is not None:
            raise CallError(StatusCode.INTERNAL, "the agent sent more than one response")
        return response.FromString(payload)
    finally:
        conn.close()
