"""Small facts about tasks that every orchestrator decision uses, and how a task is made.

Kept apart so that the replicated and global orchestrators, the restart supervisor and the
reaper agree on what "runnable", "ended" and "latest" mean.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from flotilla.proto import objects_pb2 as pb

RUNNING = pb.RUNNING
# Statuses a task reaches by itself (the agent saw it stop); SHUTDOWN is also one when the
# task was still desired RUNNING (it was stopped behind the manager's back).
SELF_ENDED = (pb.COMPLETE, pb.FAILED, pb.REJECTED)


@dataclass
class Plan:
    """The writes one decision wants, and when the decision must run again (restart delays)."""

    creates: list[pb.Task] = field(default_factory=list)
    updates: list[pb.Task] = field(default_factory=list)  # modified copies, versions kept for compare-and-swap
    deletes: list[pb.Task] = field(default_factory=list)
    wake_at: float | None = None
    more: bool = False  # new slots were held back (max_new): decide again soon for the rest
    delete_service: pb.Service | None = None  # a pending_delete service whose tasks are all gone

    def wake(self, at: float) -> None:
        """Ask to be run again at `at` (the earliest of all requests wins)."""
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)

    def set_desired(self, task: pb.Task, state: int) -> None:
        """Raise a task's desired state (desired states, like statuses, never go down)."""
        if task.desired_state >= state:
            return
        t = pb.Task()
        t.CopyFrom(task)
        t.desired_state = state
        self.updates.append(t)

    def merge(self, other: Plan) -> None:
        """Add another decision's writes and wake-up to this one."""
        self.creates += other.creates
        self.updates += other.updates
        self.deletes += other.deletes
        if other.wake_at is not None:
            self.wake(other.wake_at)

    def touched(self) -> set[str]:
        """Ids of the tasks this plan updates or deletes (so a second decision leaves them alone)."""
        return {t.id for t in self.updates} | {t.id for t in self.deletes}

    def __bool__(self) -> bool:
        return bool(self.creates or self.updates or self.deletes)


def runnable(task: pb.Task) -> bool:
    """The orchestrator still wants this task to run."""
    return task.desired_state <= RUNNING


def ended(task: pb.Task) -> bool:
    """The agent reported the task stopped (or it was rejected / orphaned)."""
    return task.status.state > RUNNING


def seconds(ts: Timestamp) -> float:
    """A protobuf timestamp as float seconds since the epoch."""
    return ts.seconds + ts.nanos / 1e9


def timestamp(at: float) -> Timestamp:
    """Float seconds since the epoch as a protobuf timestamp."""
    ts = Timestamp()
    ts.FromNanoseconds(int(at * 1e9))
    return ts


def age_key(task: pb.Task) -> tuple[float, str]:
    """Sort key: oldest first (creation time, then id so that the order is total)."""
    return (seconds(task.meta.created_at), task.id)


def latest(tasks: list[pb.Task]) -> pb.Task:
    """The newest task of a slot."""
    return max(tasks, key=age_key)


def node_usable(node: pb.Node | None) -> bool:
    """Tasks on this node can keep running: it exists, is not DOWN and is not drained.

    UNKNOWN and DISCONNECTED nodes keep their tasks (a manager restart or a brief network cut
    must not move every task in the cluster); DOWN is what the dispatcher declares after
    missed heartbeats.
    """
    return (
        node is not None
        and node.status.state != pb.NodeStatus.DOWN
        and node.spec.availability != pb.NodeSpec.DRAIN
    )


def new_task(service: pb.Service, slot: int, node_id: str, now: float, restarts: list[Timestamp] | None = None) -> pb.Task:
    """A task for `service` in `slot` (replicated) or on `node_id` (global), ready to schedule.

    Created directly as PENDING: Flotilla has no network allocator between orchestrator and
    scheduler yet (SwarmKit's allocator moves NEW to PENDING), so NEW would only cost a write.
    """
    t = pb.Task()
    t.CopyFrom(_template(service, now))
    t.id = os.urandom(13).hex()[:25]
    t.slot = slot
    t.node_id = node_id
    name = service.spec.annotations.name or service.id
    t.annotations.name = f"{name}.{slot}" if slot else f"{name}.{node_id}"
    if restarts:
        t.restarts.extend(restarts)
    return t


_templates: dict[tuple[str, int, float], pb.Task] = {}


def _template(service: pb.Service, now: float) -> pb.Task:
    """The part of a new task shared by all of one service's tasks made at one time (copying
    it is several times cheaper than building each task: scale-ups create 100,000 at once)."""
    key = (service.id, service.spec_version.index, now)
    t = _templates.get(key)
    if t is None:
        if len(_templates) > 64:
            _templates.clear()
        t = pb.Task(service_id=service.id, desired_state=RUNNING)
        t.spec.CopyFrom(service.spec.task)
        t.spec_version.CopyFrom(service.spec_version)
        t.service_annotations.CopyFrom(service.spec.annotations)
        t.status.state = pb.PENDING
        t.status.message = "pending task scheduling"
        t.status.timestamp.CopyFrom(timestamp(now))
        _templates[key] = t
    return t
