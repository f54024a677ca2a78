"""The agent's side of the log broker: serve the managers' log subscriptions.

For the length of a session the agent keeps `ListenSubscriptions` open. Each subscription
names some of this node's tasks; the agent reads their containers' json-file logs (in
threads: file reading blocks) and sends the lines with one `PublishLogs` stream per
subscription, in batches, ending it with `close` once every log is read (or, with follow,
once the containers stopped or the manager closed the subscription).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading
from pathlib import Path

import grpc

from flotilla.proto import logbroker_pb2 as lpb
from flotilla.proto import logbroker_pb2_grpc as lgrpc
from flotilla.runtime import errors
from flotilla.runtime.clock import parse_rfc3339
from flotilla.runtime.logs import read_log
from flotilla.runtime.runtime import Runtime

from .task_container import container_name

log = logging.getLogger("flotilla.agent.logs")
BATCH = 256  # log lines per PublishLogs message
_DONE = object()


class LogPublisher:
    """Answers log subscriptions for the tasks the worker runs."""

    def __init__(self, runtime: Runtime, worker) -> None:
        self._rt = runtime
        self._worker = worker
        self._subs: dict[str, tuple[asyncio.Task, threading.Event]] = {}

    async def listen(self, channel: grpc.aio.Channel, session_id: str, node_id: str) -> None:
        """Follow the manager's subscriptions until the stream ends (which ends the session)."""
        stub = lgrpc.LogBrokerStub(channel)
        call = stub.ListenSubscriptions(lpb.ListenSubscriptionsRequest(session_id=session_id, node_id=node_id))
        try:
            async for sub in call:
                if sub.close:
                    self._cancel(sub.id)
                elif sub.id not in self._subs:
                    stop = threading.Event()
                    job = asyncio.ensure_future(self._publish(stub, sub, node_id, stop))
                    self._subs[sub.id] = (job, stop)
                    job.add_done_callback(lambda _j, sid=sub.id: self._subs.pop(sid, None))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            log.warning("the manager has no log broker: `service logs` will not show this node's tasks")
            await asyncio.Event().wait()  # not a reason to end the session
        finally:
            call.cancel()
            for sid in list(self._subs):
                self._cancel(sid)

    def close(self) -> None:
        for sid in list(self._subs):
            self._cancel(sid)

    def _cancel(self, sub_id: str) -> None:
        entry = self._subs.pop(sub_id, None)
        if entry is not None:
            entry[1].set()
            entry[0].cancel()

    async def _publish(self, stub: lgrpc.LogBrokerStub, sub: lpb.SubscriptionMessage, node_id: str,
                       stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=8)
        readers = [asyncio.ensure_future(asyncio.to_thread(self._read, task_id, node_id, sub.options, stop, queue, loop))
                   for task_id in sub.task_ids]
        remaining = len(readers)

        async def messages():
            nonlocal remaining
            while remaining:
                item = await queue.get()
                if item is _DONE:
                    remaining -= 1
                    continue
                yield lpb.PublishLogsMessage(subscription_id=sub.id, messages=item)
            yield lpb.PublishLogsMessage(subscription_id=sub.id, close=True)

        try:
            await stub.PublishLogs(messages())
        except grpc.aio.AioRpcError as exc:
            log.debug("publishing logs of subscription %s ended: %s", sub.id, exc.details())
        finally:
            stop.set()
            for r in readers:
                r.cancel()

    def _read(self, task_id: str, node_id: str, options: lpb.LogSubscriptionOptions, stop: threading.Event,
              queue: asyncio.Queue, loop: asyncio.AbstractEventLoop) -> None:
        """In a thread: one task's log lines into the queue, in batches; _DONE at the end."""
        def put(item) -> bool:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    future.result(0.5)
                    return True
            future.cancel()
            return False

        pidfd = None
        try:
            controller = self._worker.controllers.get(task_id)
            if controller is None:
                return  # not (or no longer) this node's task
            cid = controller.container_id or container_name(controller.task)
            try:
                path = Path(self._rt.inspect(cid)["LogPath"])
                pidfd = self._rt.shim_pidfd(cid) if options.follow else None
            except errors.NotFound:
                return  # no container (yet, or any more): nothing to read
            service_id = controller.task.service_id
            batch: list[lpb.LogMessage] = []
            stopped = lambda: stop.is_set() or pidfd is None or bool(select.select([pidfd], [], [], 0)[0])  # noqa: E731
            entries = read_log(path, follow=options.follow, tail=None if options.tail < 0 else options.tail,
                               stopped=stopped)
            for entry in entries:
                if stop.is_set():
                    return
                msg = lpb.LogMessage(stream=lpb.LogMessage.STDERR if entry.stream == "stderr" else lpb.LogMessage.STDOUT,
                                     data=entry.data)
                msg.context.task_id, msg.context.node_id, msg.context.service_id = task_id, node_id, service_id
                with contextlib.suppress(ValueError):
                    msg.timestamp.FromNanoseconds(int(parse_rfc3339(entry.time) * 1e9))
                batch.append(msg)
                if len(batch) >= (1 if options.follow else BATCH):  # following: every line at once
                    if not put(batch):
                        return
                    batch = []
            if batch:
                put(batch)
        finally:
            if pidfd is not None:
                os.close(pidfd)
            put(_DONE)
