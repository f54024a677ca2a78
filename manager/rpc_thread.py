"""The gRPC server's own event loop, in a thread, so that bulk work cannot starve new calls.

Why: grpc.aio accepts one new call per turn of its event loop (it asks gRPC core for the
next call only after the previous one was handed over), and each call needs a few more turns
to read its request and send its answer. On the manager's main loop a turn can take hundreds
of milliseconds during a big scale-up (reconciler rounds, store batches, assignment fan-out),
so at 100,000 tasks the server accepted only a few calls per second: heartbeats of 1,000
nodes queued up and every node was declared DOWN (docs/manager.md, "The 100k stall").

Here the server runs on a loop that does nothing but gRPC. Methods named `direct` (the
heartbeat, health checks) are answered there without touching the main loop; every other
method runs on the main loop as before (the store and its cache are main-loop objects) and
its result, its messages or its abort are carried back across. Turns of the server loop stay
short, so accepting and answering calls no longer depends on how busy the main loop is.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import types
from collections.abc import Awaitable, Callable
from typing import Any

import grpc


class _Aborted(Exception):
    """`context.abort` called by a handler running on the main loop; re-raised on the server loop."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _MainContext:
    """What a handler on the main loop sees as its context: `abort` works as with grpc.aio
    (it raises); other attributes are the real context's (read-only data such as peer())."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        raise _Aborted(code, details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class RpcThread:
    """A thread running an event loop for the gRPC server; `start`, `run(coro)`, `stop`."""

    def __init__(self, name: str = "grpc-server") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def run(self, coro: Awaitable) -> Any:
        """Run `coro` on the server loop and wait for it from the calling (main) loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        """Stop the loop once what runs on it is finished (call after the server stopped)."""
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


def _on_main(main: asyncio.AbstractEventLoop, coro) -> asyncio.Future:
    """Start `coro` on the main loop; a future of the server loop for its result."""
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, main))


async def _reraise(context: grpc.aio.ServicerContext, e: _Aborted) -> None:
    await context.abort(e.code, e.details)


class _RequestIterator:
    """A client stream read on the server loop, iterated by a handler on the main loop."""

    def __init__(self, requests, server_loop: asyncio.AbstractEventLoop) -> None:
        self._it = requests.__aiter__()
        self._loop = server_loop

    def __aiter__(self) -> "_RequestIterator":
        return self

    async def __anext__(self) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._it.__anext__(), self._loop))


def _unary(fn: Callable, main: asyncio.AbstractEventLoop, client_streaming: bool) -> Callable:
    async def method(request, context):
        if client_streaming:
            request = _RequestIterator(request, asyncio.get_running_loop())
        try:
            return await _on_main(main, fn(request, _MainContext(context)))
        except _Aborted as e:
            await _reraise(context, e)
    return method


def _streaming(fn: Callable, main: asyncio.AbstractEventLoop, client_streaming: bool) -> Callable:
    """A server-streaming handler: the generator runs on the main loop and hands each message
    over, waiting until the server loop has written it (the flow control grpc.aio gives a
    generator that yields directly)."""
    async def method(request, context):
        server = asyncio.get_running_loop()
        if client_streaming:
            request = _RequestIterator(request, server)
        inbox: asyncio.Queue = asyncio.Queue()

        async def produce() -> None:
            try:
                async for msg in fn(request, _MainContext(context)):
                    written = asyncio.get_running_loop().create_future()
                    _post(server, inbox, ("msg", msg, written))
                    await written
            except asyncio.CancelledError:
                _post(server, inbox, ("end", None, None))
                raise
            except Exception as e:  # noqa: BLE001 - carried over and re-raised there
                _post(server, inbox, ("error", e, None))
            else:
                _post(server, inbox, ("end", None, None))

        producer: concurrent.futures.Future = asyncio.run_coroutine_threadsafe(produce(), main)
        try:
            while True:
                kind, item, written = await inbox.get()
                if kind == "end":
                    return
                if kind == "error":
                    if isinstance(item, _Aborted):
                        await _reraise(context, item)
                    raise item
                yield item
                main.call_soon_threadsafe(_resolve, written)
        finally:
            producer.cancel()  # the client went away or the stream ended: stop the generator
    return method


def _post(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, item: tuple) -> None:
    """Hand `item` to the server loop's queue (dropped when that loop is already closed)."""
    try:
        loop.call_soon_threadsafe(queue.put_nowait, item)
    except RuntimeError:
        pass


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def bridged(servicer: object, service: Any, main: asyncio.AbstractEventLoop, direct: frozenset[str] = frozenset()) -> object:
    """A servicer for the server loop whose methods run `servicer`'s on the main loop, except
    the methods named in `direct`, which run on the server loop itself (they must only touch
    thread-safe state). `service` is the protobuf ServiceDescriptor (which methods stream)."""
    proxy = types.SimpleNamespace()
    for m in service.methods:
        fn = getattr(servicer, m.name)
        if m.name in direct:
            wrapped = fn
        elif m.server_streaming:
            if not inspect.isasyncgenfunction(fn):
                raise TypeError(f"{type(servicer).__name__}.{m.name} must be an async generator")
            wrapped = _streaming(fn, main, m.client_streaming)
        else:
            wrapped = _unary(fn, main, m.client_streaming)
        setattr(proxy, m.name, wrapped)
    return proxy
