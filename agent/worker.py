"""Assignments → task controllers (SwarmKit's worker).

The session hands over what the dispatcher sends: a COMPLETE set of the node's tasks (first
on every Assignments stream, so also after any gap) or INCREMENTAL changes. The worker keeps
one controller per assigned task and removes the container of every task that is no longer
assigned. Containers left by an earlier agent are found by their task label; until the first
COMPLETE set arrives nothing is removed (no session must never mean "delete everything").
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable

from flotilla.proto import dispatcher_pb2 as dpb
from flotilla.proto import objects_pb2 as pb
from flotilla.runtime import errors
from flotilla.runtime.imaging.service import ImageService
from flotilla.runtime.runtime import Runtime

from .controller import TaskController
from .reporter import Reporter
from .task_container import LABEL_TASK_ID
from .task_networks import TaskNetworks

log = logging.getLogger("flotilla.agent.worker")


class Worker:
    """Keeps one TaskController per task assigned to this node."""

    def __init__(self, runtime: Runtime, reporter: Reporter, images: ImageService | None = None) -> None:
        self._rt = runtime
        self._reporter = reporter
        self._images = images  # pulls images a task needs; None: only local images run
        self.networks = TaskNetworks(runtime)
        self._swept = False  # cluster networks left unused by an earlier agent: removed after the first COMPLETE set
        self.node_id = ""  # set by the session before any assignment is applied
        self.controllers: dict[str, TaskController] = {}
        self._leftovers: dict[str, str] | None = None  # task id -> container id, until the first COMPLETE set
        self._removing: set[TaskController] = set()

    async def scan(self) -> None:
        """Find the task containers an earlier agent left (running or not), by their label."""
        found: dict[str, str] = {}
        for info in await asyncio.to_thread(self._rt.list, True):
            task_id = info.spec.labels.get(LABEL_TASK_ID)
            if task_id:
                found[task_id] = info.id
        self._leftovers = found
        if found:
            log.info("found %d task container(s) from before; they are adopted once assigned", len(found))

    def apply_complete(self, tasks: Iterable[pb.Task]) -> None:
        """The full set of this node's tasks: anything else this agent runs must go."""
        tasks = list(tasks)
        wanted = {t.id for t in tasks}
        for task_id in [t for t in self.controllers if t not in wanted]:
            self._drop(task_id)
        for task in tasks:
            self._update(task)
        leftovers, self._leftovers = self._leftovers or {}, {}
        if not self._swept:  # an agent that died between a container's removal and its network's
            self._swept = True
            asyncio.ensure_future(self.networks.remove_unused()).add_done_callback(lambda t: t.cancelled() or t.exception())
        for task_id, container_id in leftovers.items():
            if task_id not in wanted:
                log.info("removing container %s of task %s, which is no longer assigned", container_id[:12], task_id)
                self._spawn_removal(container_id)

    def apply_changes(self, changes: Iterable[dpb.AssignmentChange]) -> None:
        for change in changes:
            if change.action == dpb.AssignmentChange.REMOVE:
                self._drop(change.task.id)
            else:
                self._update(change.task)

    def states(self) -> Counter:
        """Tasks by the state this agent last reached (for metrics)."""
        return Counter(pb.TaskState.Name(c.state) for c in list(self.controllers.values()))

    def close(self) -> None:
        """The agent stops: controllers stop where they are; containers keep running."""
        for c in [*self.controllers.values(), *self._removing]:
            c.cancel()
        self.controllers.clear()
        self._removing.clear()

    # -- internals ---------------------------------------------------------------------
    def _update(self, task: pb.Task) -> None:
        controller = self.controllers.get(task.id)
        if controller is not None:
            controller.update(task)
            return
        adopted = (self._leftovers or {}).pop(task.id, None)
        controller = TaskController(task, self._rt, self._reporter, self.node_id, adopted, self._images,
                                    self.networks)
        self.controllers[task.id] = controller
        controller.start()

    def _drop(self, task_id: str) -> None:
        controller = self.controllers.pop(task_id, None)
        self._reporter.forget(task_id)
        if controller is None:
            return
        controller.remove()
        self._removing.add(controller)
        asyncio.ensure_future(controller.wait_removed()).add_done_callback(lambda _f: self._removing.discard(controller))

    def _spawn_removal(self, container_id: str) -> None:
        async def remove() -> None:
            try:
                await asyncio.to_thread(self._rt.stop, container_id)
                await asyncio.to_thread(self._rt.remove, container_id, True)
                await self.networks.remove_unused()  # a leftover may have been the last on a cluster network
            except errors.NotFound:
                pass
            except errors.RuntimeFault as exc:
                log.warning("could not remove container %s: %s", container_id[:12], exc)
        task = asyncio.ensure_future(remove())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
