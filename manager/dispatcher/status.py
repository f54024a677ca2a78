"""Batched task status writes: reports of many agents coalesced into few etcd transactions.

Each UpdateTaskStatus call queues its updates and waits for the round that writes them. A round
starts `interval` after the first queued update, takes everything queued so far (the latest
report per task wins) and writes it with one `store.batch`. States only increase: a report
that would move a task backwards (a late or duplicated message) is dropped. A write that
conflicts (a reconciler changed the task meanwhile) is retried in the next round against the
new version.
"""
from __future__ import annotations

import asyncio
import logging

from flotilla.proto import objects_pb2 as pb

from .. import metrics
from ..store import Conflict, NotFound, Op, Store

log = logging.getLogger(__name__)


class StatusWriter:
    """Coalesces task status reports; `submit` returns once they are written (or dropped)."""

    def __init__(self, store: Store, interval: float = 0.05) -> None:
        self.store = store
        self.interval = interval
        self._pending: dict[str, tuple[str, pb.TaskStatus]] = {}
        self._round: asyncio.Future | None = None
        self._kick = asyncio.Event()

    async def submit(self, node_id: str, updates) -> None:
        for u in updates:
            queued = self._pending.get(u.task_id)
            if queued is None or u.status.state >= queued[1].state:
                self._pending[u.task_id] = (node_id, u.status)
        metrics.STATUS_UPDATES.inc(len(updates))
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
        fut = self._round
        self._kick.set()
        await asyncio.shield(fut)

    async def run(self) -> None:
        while True:
            await self._kick.wait()
            await asyncio.sleep(self.interval)
            self._kick.clear()
            pending, self._pending = self._pending, {}
            fut, self._round = self._round, None
            try:
                await self._write(pending)
            except Exception as e:  # noqa: BLE001 - the agents waiting on this round learn of it
                log.warning("dispatcher: writing task statuses failed: %s", e)
                if fut is not None and not fut.done():
                    fut.set_exception(e)
                    fut.exception()  # mark retrieved: waiters may have gone away
                continue
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _write(self, pending: dict[str, tuple[str, pb.TaskStatus]]) -> None:
        for attempt in range(5):
            if attempt:
                await asyncio.sleep(0.02 * attempt)  # let the watch bring the newer version
            ops = []
            for n, (task_id, (node_id, status)) in enumerate(pending.items()):
                if n % 1000 == 999:
                    await asyncio.sleep(0)  # let the event loop serve calls between slices
                task = self.store.get("task", task_id)
                if task is None or task.node_id != node_id:
                    continue  # deleted, or not this node's task: nothing to record
                if status.state < task.status.state or status == task.status:
                    continue
                t = pb.Task()
                t.CopyFrom(task)
                t.status.CopyFrom(status)
                ops.append(Op("update", "task", t))
            if not ops:
                return
            results = await self.store.batch(ops)
            metrics.STATUS_WRITES.inc(sum(1 for r in results if not isinstance(r, Exception)))
            retry = {}
            for op, r in zip(ops, results):
                if isinstance(r, Conflict):
                    retry[op.obj.id] = pending[op.obj.id]
                elif isinstance(r, Exception) and not isinstance(r, NotFound):
                    raise r
            if not retry:
                return
            pending = retry
