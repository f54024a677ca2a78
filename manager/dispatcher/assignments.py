"""Assignment streams: which tasks each connected node must run, as COMPLETE + INCREMENTAL.

One store subscription feeds every stream (a fan-out by node id), so 1,000 sessions cost one
event per change, not 1,000. A stream only forwards what the agent acts on (a task appearing,
its desired state or spec version changing, a task disappearing); status changes the agent
itself reported are not echoed back. Changes are gathered for `batch_interval` before a
message is sent, so a scale-up of many tasks on a node arrives as one message.
"""
from __future__ import annotations

import asyncio

from flotilla.proto import dispatcher_pb2 as dpb
from flotilla.proto import objects_pb2 as pb

from .. import metrics
from ..store import Event, Store
from .networks import attach_networks

UPDATE = dpb.AssignmentChange.UPDATE
REMOVE = dpb.AssignmentChange.REMOVE


def is_assigned(task: pb.Task, node_id: str) -> bool:
    """A task belongs on the node from ASSIGNED on, until it was removed and has ended."""
    if task.node_id != node_id or task.status.state < pb.ASSIGNED:
        return False
    return not (task.desired_state >= pb.REMOVE and task.status.state >= pb.COMPLETE)


def _fingerprint(task: pb.Task) -> tuple[int, int]:
    return task.desired_state, task.spec_version.index


class AssignmentStream:
    """The state of one Assignments call: what the agent knows and what it must learn next."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.known: dict[str, tuple[int, int]] = {}
        self.pending: dict[str, tuple[int, pb.Task]] = {}
        self.wake = asyncio.Event()
        self.closed = False

    def offer(self, task: pb.Task, deleted: bool) -> None:
        if not deleted and is_assigned(task, self.node_id):
            fp = _fingerprint(task)
            if self.known.get(task.id) != fp:
                self.known[task.id] = fp
                self.pending[task.id] = (UPDATE, task)
                self.wake.set()
        elif self.known.pop(task.id, None) is not None:
            self.pending[task.id] = (REMOVE, task)
            self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class Assignments:
    """The fan-out of task events to the open streams."""

    def __init__(self, store: Store, batch_interval: float = 0.05) -> None:
        self.store = store
        self.batch_interval = batch_interval
        self.streams: dict[str, set[AssignmentStream]] = {}

    async def run(self) -> None:
        queue = self.store.subscribe({"task"})
        try:
            while True:
                event: Event = await queue.get()
                self._route(event)
                for _ in range(min(queue.qsize(), 2000)):  # then yield: other calls wait otherwise
                    self._route(queue.get_nowait())
        finally:
            self.store.unsubscribe(queue)

    def _route(self, event: Event) -> None:
        deleted = event.action == "delete"
        nodes = {event.obj.node_id}
        if event.old is not None:
            nodes.add(event.old.node_id)
        for node_id in nodes:
            for stream in self.streams.get(node_id, ()):
                stream.offer(event.obj, deleted)

    def close_node(self, node_id: str) -> None:
        for stream in list(self.streams.get(node_id, ())):
            stream.close()

    async def serve(self, node_id: str, alive) -> object:
        """Yield the messages of one stream until it is closed or `alive()` turns false."""
        stream = AssignmentStream(node_id)
        self.streams.setdefault(node_id, set()).add(stream)
        try:
            complete = dpb.AssignmentsMessage(type=dpb.AssignmentsMessage.COMPLETE, applies_to=0, results_in=1)
            for task in self.store.tasks_of_node(node_id):
                if is_assigned(task, node_id):
                    stream.known[task.id] = _fingerprint(task)
                    attach_networks(complete.changes.add(action=UPDATE, task=task).task, self.store)
            sequence = 1
            metrics.ASSIGNMENT_MESSAGES.labels("complete").inc()
            yield complete
            while True:
                await stream.wake.wait()
                if stream.closed or not alive():
                    return
                await asyncio.sleep(self.batch_interval)
                stream.wake.clear()
                changes, stream.pending = stream.pending, {}
                if not changes:
                    continue
                msg = dpb.AssignmentsMessage(type=dpb.AssignmentsMessage.INCREMENTAL, applies_to=sequence, results_in=sequence + 1)
                for action, task in changes.values():
                    attach_networks(msg.changes.add(action=action, task=task).task, self.store)
                sequence += 1
                metrics.ASSIGNMENT_MESSAGES.labels("incremental").inc()
                yield msg
        finally:
            bucket = self.streams.get(node_id)
            if bucket is not None:
                bucket.discard(stream)
                if not bucket:
                    del self.streams[node_id]
