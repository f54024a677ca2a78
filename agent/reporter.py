"""Batched task status reports to the dispatcher (SwarmKit's agent reporter).

Controllers call `report()` as often as they like; only the latest status of each task is
kept, and one UpdateTaskStatus per tick carries every task that changed since the last one,
so a burst of 200 tasks walking through six states costs a handful of RPCs. A report that
could not be delivered (no session, manager gone) stays pending and goes out with the next
session: the manager must end up knowing every state the agent observed last.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from flotilla.proto import dispatcher_pb2 as dpb
from flotilla.proto import objects_pb2 as pb

log = logging.getLogger("flotilla.agent.reporter")
TICK = 0.1  # seconds between two batches
MAX_BATCH = 1000  # updates per RPC, far below gRPC's message size limit

Send = Callable[[list[dpb.TaskStatusUpdate]], Awaitable[None]]


class Reporter:
    """Keeps the newest status per task and flushes them in batches while a session is up."""

    def __init__(self) -> None:
        self._pending: dict[str, pb.TaskStatus] = {}
        self._latest: dict[str, pb.TaskStatus] = {}  # what the agent last observed, sent or not
        self._wakeup = asyncio.Event()

    def report(self, task_id: str, status: pb.TaskStatus) -> None:
        """Queue a status; a lower state than one already observed is dropped (states only increase)."""
        last = self._latest.get(task_id)
        if last is not None and status.state < last.state:
            return
        self._latest[task_id] = status
        self._pending[task_id] = status
        self._wakeup.set()

    def forget(self, task_id: str) -> None:
        """The task is gone from the assignments: nothing more to tell about it."""
        self._latest.pop(task_id, None)
        self._pending.pop(task_id, None)

    def resend_all(self) -> None:
        """A new session: the manager may have missed anything, so tell it everything again."""
        self._pending.update(self._latest)
        self._wakeup.set()

    def observed(self, task_id: str) -> pb.TaskStatus | None:
        return self._latest.get(task_id)

    async def run(self, send: Send) -> None:
        """Flush batches through `send` until cancelled; raises when a send fails (session over)."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(TICK)  # coalesce what the controllers report within one tick
            while self._pending:
                batch = list(self._pending.items())[:MAX_BATCH]
                for task_id, _ in batch:
                    del self._pending[task_id]
                try:
                    await send([dpb.TaskStatusUpdate(task_id=t, status=s) for t, s in batch])
                except BaseException:
                    for task_id, status in batch:  # keep them, unless newer or forgotten meanwhile
                        if task_id in self._latest:
                            self._pending.setdefault(task_id, status)
                    raise
