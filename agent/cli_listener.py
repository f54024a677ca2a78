"""The agent's CLI socket: the Runtime servicer served over `flotilla.proto.framing`, not HTTP/2.

`swarmctl` spends more CPU importing grpcio than a whole `run --rm` should take, so the agent
also listens on `<gRPC socket>.cli` and dispatches each call to the very same servicer methods
the gRPC server uses (one implementation of every RPC). `CliContext` stands in for grpc.aio's
ServicerContext as far as the servicers use it: `abort`, and the `set_code`/`set_details` of the
generated base class. A client that closes its connection cancels its call's task, which is how
grpc.aio cancels a handler too. Broken framing, unknown methods or unparsable messages get a
one-line STATUS and the connection is closed; nothing a client sends can stop the agent.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from flotilla.proto import framing
from flotilla.proto.framing import StatusCode

from .errors import status_for

log = logging.getLogger("flotilla.agent.cli")
REQUESTS_AHEAD = 16  # client-stream messages read ahead of the handler (back-pressure beyond)
_END = object()


class CliAbort(Exception):
    """Raised by `CliContext.abort`, as grpc.aio raises AbortError: it ends the handler."""

    def __init__(self, code: int, details: str, trailers: tuple[tuple[str, str], ...]) -> None:
        super().__init__(details)
        self.status = (code, details, trailers)


def _code(code: grpc.StatusCode | int) -> int:
    return code.value[0] if isinstance(code, grpc.StatusCode) else int(code)


class CliContext:
    """What the servicers use of grpc.aio.ServicerContext."""

    def __init__(self) -> None:
        self.code: int | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: tuple[tuple[str, str], ...] = ()) -> NoReturn:
        raise CliAbort(_code(code), details, tuple(trailing_metadata))

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = _code(code)

    def set_details(self, details: str) -> None:
        self.details = details


class _Method:
    """One RPC: the servicer's bound handler, its request class and streaming kinds."""

    def __init__(self, servicer: Any, method: Any, messages: Any) -> None:
        self.name = method.name
        self.handler = getattr(servicer, method.name)
        self.request = getattr(messages, method.input_type.name)
        self.client_streaming = method.client_streaming
        self.server_streaming = method.server_streaming


class _ClientGone(Exception):
    """The client closed its connection (or broke the framing) before the call ended."""

    def __init__(self, status: tuple[int, str, tuple] | None = None) -> None:
        super().__init__()
        self.status = status  # what to tell a client that broke the framing, None if it left


class CliListener:
    """Serve `servicer` (the service `service` of module `messages`) on a unix socket at `path`."""

    def __init__(self, servicer: Any, service: Any, messages: Any, path: Path) -> None:
        self.path = path
        self._methods = {m.name: _Method(servicer, m, messages) for m in service.methods}
        self._server: asyncio.AbstractServer | None = None
        self._calls: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Listen; the socket appears under its name only once its mode is 0660, as the gRPC one."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            staging.unlink(missing_ok=True)
            sock.bind(str(staging))
            os.chmod(staging, 0o660)
            os.rename(staging, self.path)
            sock.listen(128)
            self._server = await asyncio.start_unix_server(self._connection, sock=sock)
        except BaseException:
            sock.close()
            staging.unlink(missing_ok=True)
            raise

    async def close(self, grace: float) -> None:
        """Stop listening, give running calls `grace` seconds, cancel the rest, remove the socket."""
        if self._server is not None:
            self._server.close()
        self.path.unlink(missing_ok=True)
        if self._calls:
            _, pending = await asyncio.wait(set(self._calls), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one connection = one call -----------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            status = await self._call(reader, writer)
            if status is not None:
                writer.write(framing.encode_status(*status))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client has gone, or the agent is stopping: nobody to tell
        finally:
            self._calls.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _call(self, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> tuple[int, str, tuple] | None:
        """Run one call; its final status, or None when the client left before it ended."""
        try:
            kind, payload = await _read_frame(reader)
            if kind != framing.CALL or len(payload) > framing.MAX_METHOD:
                return StatusCode.INVALID_ARGUMENT, "the first frame must be CALL with a method name", ()
            name = payload.decode("ascii", errors="replace")
            method = self._methods.get(name)
            if method is None:
                return StatusCode.UNIMPLEMENTED, f"unknown method {name!r} of the Runtime service", ()
            if method.client_streaming:
                queue: asyncio.Queue = asyncio.Queue(REQUESTS_AHEAD)
                feeder = asyncio.create_task(_feed(reader, method, queue))
                argument: Any = _drain(queue)
            else:
                argument = await _read_request(reader, method)
                feeder = asyncio.create_task(_watch(reader))
        except _ClientGone as gone:
            return gone.status
        feeder.add_done_callback(_retrieve)  # its exception may go unread when the handler ends first
        context = CliContext()
        handler = asyncio.create_task(self._respond(method, argument, context, writer))
        try:
            await asyncio.wait({handler, feeder}, return_when=asyncio.FIRST_COMPLETED)
            if not handler.done() and feeder.done() and feeder.exception() is not None:
                handler.cancel()  # the client left or broke the framing mid-call: cancel, as gRPC does
                with contextlib.suppress(BaseException):
                    await handler
                gone = feeder.exception()
                return gone.status if isinstance(gone, _ClientGone) else None
            return await handler
        finally:
            feeder.cancel()
            handler.cancel()

    async def _respond(self, method: _Method, argument: Any, context: CliContext,
                       writer: asyncio.StreamWriter) -> tuple[int, str, tuple]:
        """Call the servicer's handler, write its responses; its status (aborts included)."""
        try:
            if method.server_streaming:
                responses = method.handler(argument, context)
                try:
                    async for response in responses:
                        writer.write(framing.encode(framing.MESSAGE, response.SerializeToString()))
                        await writer.drain()
                finally:  # a client gone mid-stream: the handler's own clean-up runs now, not at GC
                    await responses.aclose()
            else:
                response = await method.handler(argument, context)
                writer.write(framing.encode(framing.MESSAGE, response.SerializeToString()))
        except CliAbort as abort:
            return abort.status
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            if context.code is not None:  # the generated base class: set_code(UNIMPLEMENTED), then raise
                return context.code, context.details, ()
            code, details, trailers = status_for(exc)
            log.error("%s failed on the CLI socket", method.name, exc_info=exc)
            return _code(code), details, trailers
        return StatusCode.OK, "", ()


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame; _ClientGone for EOF (a status is still sent after a truncated frame)."""
    try:
        header = await reader.readexactly(framing.HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _ClientGone() from None
        raise _ClientGone((StatusCode.INVALID_ARGUMENT, "truncated frame header", ())) from None
    try:
        kind, length = framing.parse_header(header)
    except framing.FrameError as exc:
        raise _ClientGone((StatusCode.INVALID_ARGUMENT, str(exc), ())) from None
    try:
        return kind, await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise _ClientGone((StatusCode.INVALID_ARGUMENT,
                           f"truncated frame: {len(exc.partial)} of {length} bytes", ())) from None


async def _read_request(reader: asyncio.StreamReader, method: _Method) -> Any:
    """The next frame, which must be a MESSAGE, parsed as the method's request."""
    return _parse_request(method, *await _read_frame(reader))


def _parse_request(method: _Method, kind: int, payload: bytes) -> Any:
    if kind != framing.MESSAGE:
        raise _ClientGone((StatusCode.INVALID_ARGUMENT,
                           f"expected a MESSAGE frame, got {framing.KINDS[kind]}", ()))
    try:
        return method.request.FromString(payload)
    except DecodeError:
        raise _ClientGone((StatusCode.INVALID_ARGUMENT,
                           f"cannot parse the {method.name} request as {method.request.__name__}", ())) from None


async def _watch(reader: asyncio.StreamReader) -> NoReturn:
    """After its last request the client only waits: EOF (or any byte) means it cancelled."""
    await reader.read(1)
    raise _ClientGone()


async def _feed(reader: asyncio.StreamReader, method: _Method, queue: asyncio.Queue) -> NoReturn:
    """Move a client stream's requests into `queue` until HALF_CLOSE, then watch for a cancel."""
    while True:
        kind, payload = await _read_frame(reader)
        if kind == framing.HALF_CLOSE:
            await queue.put(_END)
            await _watch(reader)
        await queue.put(_parse_request(method, kind, payload))


async def _drain(queue: asyncio.Queue) -> AsyncIterator[Any]:
    """The request iterator a client-streaming handler gets."""
    while True:
        item = await queue.get()
        if item is _END:
            return
        yield item
