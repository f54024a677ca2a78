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
import collections
import contextlib
import inspect
import logging
import threading
import types
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)


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


class _Mailbox:
    """Calls handed to one loop from another thread, run in batches: one wake-up of the target
    loop (a write to its self-pipe, which `call_soon_threadsafe` does per call) for all the calls
    posted since its last turn. With 1,000 nodes' streams and status reports crossing between
    the two loops, per-call wake-ups cost ~15 % of both threads (py-spy)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: collections.deque = collections.deque()
        self._scheduled = False

    def post(self, fn: Callable, *args: Any) -> None:
        self._calls.append((fn, args))
        if not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: nothing will run there any more
                self._calls.clear()

    def _drain(self) -> None:
        self._scheduled = False  # before popping: a call posted from now on schedules a new drain
        calls = self._calls
        while calls:
            fn, args = calls.popleft()
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one bad call must not strand the ones behind it
                log.exception("rpc thread: a call handed over between loops failed")


_MAILBOXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MAILBOXES_LOCK = threading.Lock()


def _mailbox(loop: asyncio.AbstractEventLoop) -> _Mailbox:
    box = _MAILBOXES.get(loop)
    if box is None:
        with _MAILBOXES_LOCK:
            box = _MAILBOXES.setdefault(loop, _Mailbox(loop))
    return box


def call_on(target: asyncio.AbstractEventLoop, coro) -> asyncio.Future:
    """Run `coro` on `target` (another thread's loop); a future of the calling loop for its
    outcome. Cancelling that future cancels the coroutine's task over there."""
    here = asyncio.get_running_loop()
    result = here.create_future()
    slot: dict[str, Any] = {}

    def start() -> None:  # on target
        if slot.get("cancelled"):
            coro.close()
            return
        task = slot["task"] = target.create_task(coro)
        task.add_done_callback(lambda t: _mailbox(here).post(_settle, result, t))

    def cancel() -> None:  # on target
        task = slot.get("task")
        if task is None:
            slot["cancelled"] = True
        else:
            task.cancel()

    result.add_done_callback(lambda f: _mailbox(target).post(cancel) if f.cancelled() else None)
    _mailbox(target).post(start)
    return result


def _settle(result: asyncio.Future, task: asyncio.Task) -> None:
    """Copy a finished task's outcome (from the other loop) into `result`."""
    error = None if task.cancelled() else task.exception()  # retrieved even when nobody waits any more
    if result.done():
        return
    if task.cancelled():
        result.cancel()
    elif error is not None:
        result.set_exception(error)
    else:
        result.set_result(task.result())


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
        return await call_on(self._loop, self._it.__anext__())


def _unary(fn: Callable, main: asyncio.AbstractEventLoop, client_streaming: bool) -> Callable:
    async def method(request, context):
        if client_streaming:
            request = _RequestIterator(request, asyncio.get_running_loop())
        try:
            return await call_on(main, fn(request, _MainContext(context)))
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
        to_server = _mailbox(server)

        async def produce() -> None:  # on the main loop
            messages = fn(request, _MainContext(context))
            try:
                async with contextlib.aclosing(messages):  # its `finally` runs now, not at garbage collection
                    async for msg in messages:
                        written = asyncio.get_running_loop().create_future()
                        to_server.post(inbox.put_nowait, ("msg", msg, written))
                        await written
            except asyncio.CancelledError:
                to_server.post(inbox.put_nowait, ("end", None, None))
                raise
            except Exception as e:  # noqa: BLE001 - carried over and re-raised there
                to_server.post(inbox.put_nowait, ("error", e, None))
            else:
                to_server.post(inbox.put_nowait, ("end", None, None))

        producer = call_on(main, produce())
        to_main = _mailbox(main)
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
                to_main.post(_resolve, written)
        finally:
            producer.cancel()  # the client went away or the stream ended: stop the generator
    return method


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
