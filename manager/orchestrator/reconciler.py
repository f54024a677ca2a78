"""The orchestrating reconciler: runs the per-service decisions whenever a service may need one.

One loop serves the replicated and global orchestrators, the restart supervisor (restart
delays are timers here), the handling of tasks on DOWN or drained nodes, and the task reaper:
all of them decide per service from the same cached tasks, so one pass per changed service
and one `store.batch` per round keep the work proportional to what changed. Decisions are
functions of the cache (never of the events themselves), so a round can be repeated, cut
short by a crash, or started by a new leader, and the outcome is the same.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable

from flotilla.proto import objects_pb2 as pb

from ..scheduler.scheduler import Scheduler
from ..store import Op
from .global_ import reconcile_global
from .reaper import history_limit, reap
from .removal import reconcile_removed
from .replicated import reconcile_replicated
from .tasks import Plan, ended

log = logging.getLogger(__name__)

CONFLICT_RETRY = 0.1  # seconds before a service whose write conflicted is decided again
WRITE_CHUNK = 8192  # ops per store.batch call, so that other reconcilers interleave with a big round
# New tasks created per round, over all services: a 100,000-task scale-up goes out in rounds,
# so the scheduler, dispatcher and agents start on the first ones while the rest are made.
# 8,192 rather than 4,096 (one batch of ~65 transactions instead of two of ~17 in a row): 100k
# tasks RUNNING in 67 s instead of 78 s (docs/manager.md); the gRPC server and the lease
# keep-alive have threads of their own, so a longer round no longer starves them.
ROUND_NEW_TASKS = 8192


def _relevant_task_change(old: pb.Task | None, new: pb.Task | None) -> bool:
    """Whether a task change can alter its service's decision (assignment and progress cannot)."""
    if old is None or new is None:
        return True
    return old.desired_state != new.desired_state or ended(old) != ended(new)


def _relevant_node_change(old: pb.Node | None, new: pb.Node | None) -> bool:
    if old is None or new is None:
        return True
    return (
        old.status.state != new.status.state
        or old.spec.availability != new.spec.availability
        or old.spec.annotations.labels != new.spec.annotations.labels
        or old.description.engine_labels != new.description.engine_labels
        or old.role != new.role
    )


class Orchestrator:
    """Keeps every service's tasks as its spec, its restart policy and the nodes require."""

    name = "orchestrator"

    def __init__(self, store, write: Callable, clock: Callable[[], float] = time.time, debounce: float = 0.02,
                 scheduler: Scheduler | None = None) -> None:
        self.store = store
        self._write = write
        self._scheduler = scheduler  # places new tasks before they are written (see Scheduler.place_new)
        self._written: dict[str, int] = {}  # task id -> desired state of our own writes not yet seen back
        self._clock = clock
        self._debounce = debounce
        self._timers: list[tuple[float, str]] = []

    async def run(self) -> None:
        """Reconcile every service from the cache, then whatever each change touches."""
        queue = self.store.subscribe({"service", "task", "node", "cluster"})
        self._timers, self._written = [], {}  # a rerun starts afresh (the full pass re-creates timers)
        try:
            dirty = {s.id for s in self.store.list("service")} | {t.service_id for t in self.store.list("task")}
            while True:
                now = self._clock()
                while self._timers and self._timers[0][0] <= now:
                    dirty.add(heapq.heappop(self._timers)[1])
                if dirty:
                    conflicted, dirty = await self.reconcile(dirty)
                    for sid in conflicted:  # someone wrote meanwhile: decide again a little later
                        heapq.heappush(self._timers, (self._clock() + CONFLICT_RETRY, sid))
                    if dirty:  # a big scale-up goes on next round, after the others had their turn
                        await asyncio.sleep(0)
                        while not queue.empty():
                            self._mark(queue.get_nowait(), dirty)
                        continue
                timeout = max(0.0, self._timers[0][0] - self._clock()) if self._timers else None
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    continue
                self._mark(event, dirty)
                await asyncio.sleep(self._debounce)  # let a burst of changes arrive, decide once
                while not queue.empty():
                    self._mark(queue.get_nowait(), dirty)
        finally:
            self.store.unsubscribe(queue)

    def _mark(self, event, dirty: set[str]) -> None:
        """Add the services `event` may change the decision of."""
        if event.kind == "service":
            dirty.add(event.obj.id)
        elif event.kind == "task":
            new = event.obj if event.action != "delete" else None
            mine = self._written.pop(event.obj.id, None)
            reapable = new is not None and ended(new) and new.desired_state >= pb.REMOVE  # the reaper skipped it while writing it
            if mine is not None and new is not None and new.desired_state == mine and not reapable and (
                    event.old is None or ended(event.old) == ended(new)):
                return  # our own write coming back: the decision that made it already saw it
            if _relevant_task_change(event.old, new):
                dirty.add(event.obj.service_id)
        elif event.kind == "node":
            if _relevant_node_change(event.old, event.obj if event.action != "delete" else None):
                dirty.update(t.service_id for t in self.store.tasks_of_node(event.obj.id))
                dirty.update(s.id for s in self.store.list("service") if s.spec.WhichOneof("mode") == "global")
        elif event.kind == "cluster":
            dirty.update(s.id for s in self.store.list("service"))

    def decide(self, sid: str, nodes: dict[str, pb.Node], limit: int, now: float, max_new: int | None = None) -> Plan:
        """The plan of one service from the cache as it is now (`max_new`: at most that many
        new replicated slots this time; the service is decided again for the rest)."""
        service = self.store.get("service", sid)
        tasks = self.store.tasks_of_service(sid)
        if service is None or service.pending_delete:
            plan = reconcile_removed(tasks)
        elif service.spec.WhichOneof("mode") == "global":
            plan = reconcile_global(service, tasks, nodes, now)
        else:
            plan = reconcile_replicated(service, tasks, nodes, now, max_new=max_new)
        plan.deletes += reap(tasks, nodes, limit, skip=plan.touched())
        if service is not None and service.pending_delete and not tasks:
            plan.delete_service = service
        return plan

    async def reconcile(self, service_ids: set[str]) -> tuple[set[str], set[str]]:
        """Decide and write. Returns the services whose writes conflicted (to decide again
        shortly) and those left for the next round (scale-ups beyond this round's budget)."""
        now = self._clock()
        nodes = {n.id: n for n in self.store.list("node")}
        clusters = self.store.list("cluster")
        limit = history_limit(clusters[0] if clusters else None)
        budget = ROUND_NEW_TASKS
        leftover: set[str] = set()
        ops: list[tuple[str, Op]] = []
        for sid in service_ids:
            if budget <= 0:
                leftover.add(sid)
                continue
            plan = self.decide(sid, nodes, limit, now, max_new=budget)
            if plan.more:
                leftover.add(sid)
            budget -= len(plan.creates)
            if plan.wake_at is not None:
                heapq.heappush(self._timers, (plan.wake_at, sid))
            if self._scheduler is not None:
                self._scheduler.place_new(plan.creates)
            # Creates first: a crash between chunks then leaves two runnable tasks in a slot
            # (the next pass shuts one down) rather than none.
            ops += [(sid, Op("create", "task", t)) for t in plan.creates]
            ops += [(sid, Op("update", "task", t)) for t in plan.updates]
            ops += [(sid, Op("delete", "task", t)) for t in plan.deletes]
            if plan.delete_service is not None:
                ops.append((sid, Op("delete", "service", plan.delete_service)))
            await asyncio.sleep(0)  # deciding a big service takes a while: let the servers breathe
        conflicted: set[str] = set()
        for start in range(0, len(ops), WRITE_CHUNK):
            chunk = ops[start:start + WRITE_CHUNK]
            for _, op in chunk:
                if op.kind == "task" and op.action != "delete":
                    self._written[op.obj.id] = op.obj.desired_state
            results = await self._write([op for _, op in chunk])
            for (sid, op), result in zip(chunk, results):
                if isinstance(result, Exception):
                    log.debug("orchestrator: %s %s of service %s: %s", op.action, op.kind, sid, result)
                    conflicted.add(sid)
                    if op.kind == "task" and op.action != "delete":
                        self._written.pop(op.obj.id, None)
                    if op.action == "create" and self._scheduler is not None:
                        self._scheduler.forget(op.obj.id)
        return conflicted, leftover
