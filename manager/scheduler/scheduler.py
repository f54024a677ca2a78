"""The scheduler reconciler: PENDING tasks to ASSIGNED, decided and written in batches.

Changes are collected for one tick, then every task that became PENDING is placed in one
`placement.place` call and the results written in one `store.batch`. Tasks that fit nowhere
keep PENDING with SwarmKit's explanation in `status.err` and are tried again as soon as a
node changes or a task frees resources (not on every tick, so a large unschedulable backlog
costs nothing while nothing changes).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from flotilla.proto import objects_pb2 as pb

from . import metrics
from ..orchestrator.tasks import seconds, timestamp
from ..store import Op
from .nodeinfo import Cluster
from .placement import place

log = logging.getLogger(__name__)


def is_pending(task: pb.Task | None) -> bool:
    """A task the scheduler must place."""
    return task is not None and task.status.state == pb.PENDING and task.desired_state <= pb.RUNNING


class Scheduler:
    """Assigns pending tasks to nodes."""

    name = "scheduler"

    def __init__(self, store, write: Callable, tick: float = 0.05, max_batch: int = 5_000, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._write = write
        self._tick = tick
        self._max_batch = max_batch
        self._clock = clock
        self.cluster = Cluster()
        self._fresh: dict[str, None] = {}  # ids never tried (ordered: first come, first placed)
        self._parked: set[str] = set()  # ids that fit nowhere last time
        self._retry = False
        self._queue: asyncio.Queue | None = None  # set while run() keeps the model current

    async def run(self) -> None:
        """Load nodes and tasks from the cache, then place what becomes pending, tick by tick."""
        queue = self.store.subscribe({"task", "node"})
        self.cluster, self._fresh, self._parked, self._retry = Cluster(), {}, set(), False  # a rerun starts afresh
        self._queue = queue
        try:
            for node in self.store.list("node"):
                self.cluster.set_node(node)
            for task in self.store.list("task"):
                self.cluster.account(task.id, task)
                if is_pending(task):
                    self._fresh[task.id] = None
            while True:
                if self._fresh or (self._retry and self._parked):
                    await self.schedule_round()
                    if self._fresh:
                        await asyncio.sleep(0)  # a backlog beyond max_batch: go on, but let others run
                        continue
                event = await queue.get()
                self._apply(event)
                await asyncio.sleep(self._tick)
                applied = 0
                while not queue.empty():
                    self._apply(queue.get_nowait())
                    applied += 1
                    if applied % 2000 == 0:
                        await asyncio.sleep(0)  # 100,000 queued changes: let the servers breathe
        finally:
            self._queue = None
            self.store.unsubscribe(queue)

    def _apply(self, event) -> None:
        """Fold one change into the model; the cache (not the event) says what is current."""
        if event.kind == "node":
            node = self.store.get("node", event.obj.id)
            if node is None:
                self.cluster.remove_node(event.obj.id)
            else:
                self.cluster.set_node(node)
            self._retry = True
            return
        tid = event.obj.id
        task = self.store.get("task", tid)
        if self.cluster.account(tid, task):
            self._retry = True
        if is_pending(task):
            if tid not in self._parked:
                self._fresh[tid] = None
        else:
            self._fresh.pop(tid, None)
            self._parked.discard(tid)

    def _take(self) -> list[pb.Task]:
        """The tasks to place this round: fresh ones, plus the parked ones when worth a retry."""
        ids = list(self._fresh)[: self._max_batch]
        for tid in ids:
            del self._fresh[tid]
        if self._retry:
            ids += self._parked
            self._parked = set()
            self._retry = False
        tasks = [self.store.get("task", tid) for tid in ids]
        return [t for t in tasks if is_pending(t)]

    def place_new(self, tasks: list[pb.Task]) -> None:
        """Place tasks the orchestrator is about to create, so that they are written ASSIGNED
        in the same transaction instead of PENDING and then updated (one etcd write and one
        watch event per task fewer, a third of a scale-up's writes). Tasks that fit nowhere
        are left PENDING and go the usual way. Call `forget` for those whose create failed.
        """
        if self._queue is None:
            return
        while not self._queue.empty():  # the caller decided on the cache as it is: catch up with it
            self._apply(self._queue.get_nowait())
        pending = [t for t in tasks if is_pending(t)]
        if not pending:
            return
        out = place(pending, self.cluster)
        now = self._clock()
        for task, node_id in out.assigned:
            self._mark_assigned(task, node_id, now)
        metrics.SCHEDULING_BATCH.observe(len(pending))
        metrics.SCHEDULING_DECISIONS.inc(len(out.assigned))

    def forget(self, task_id: str) -> None:
        """A task `place_new` placed was not created: give its resources back."""
        self.cluster.account(task_id, self.store.get("task", task_id))

    @staticmethod
    def _mark_assigned(task: pb.Task, node_id: str, now: float) -> None:
        task.node_id = node_id
        task.status.state = pb.ASSIGNED
        task.status.message = "scheduler assigned task to node"
        task.status.err = ""
        task.status.timestamp.CopyFrom(timestamp(now))

    async def schedule_round(self) -> None:
        """Place one batch and write it."""
        started = time.perf_counter()
        tasks = self._take()
        if not tasks:
            return
        out = place(tasks, self.cluster)
        now = self._clock()
        ops = []
        for task, node_id in out.assigned:
            t = pb.Task()
            t.CopyFrom(task)
            self._mark_assigned(t, node_id, now)
            ops.append(Op("update", "task", t))
            metrics.SCHEDULING_LATENCY.observe(max(0.0, now - seconds(task.status.timestamp)))
        for tid, (task, why) in out.unschedulable.items():
            self._parked.add(tid)
            if task.status.err != why:
                t = pb.Task()
                t.CopyFrom(task)
                t.status.err = why
                ops.append(Op("update", "task", t))
        metrics.SCHEDULING_BATCH.observe(len(tasks))
        metrics.SCHEDULING_DECISIONS.inc(len(out.assigned))
        results = await self._write(ops) if ops else []
        for op, result in zip(ops, results):
            if isinstance(result, Exception):
                # Someone changed the task meanwhile: undo the tentative usage, look again.
                log.debug("scheduler: task %s: %s", op.obj.id, result)
                current = self.store.get("task", op.obj.id)
                self.cluster.account(op.obj.id, current)
                if is_pending(current):
                    self._parked.discard(op.obj.id)
                    self._fresh[op.obj.id] = None
        metrics.SCHEDULING_ROUND.observe(time.perf_counter() - started)
