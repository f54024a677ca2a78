"""The restart supervisor's decisions: restart condition, delay, max attempts in a window.

SwarmKit keeps restart history in the leader's memory, so a new leader forgets it and may
restart a task past max_attempts. Flotilla keeps it in the replacement task (`Task.restarts`),
so a decision gives the same answer on any leader, and a restart is due at a time derived
from the stored status (ended + delay), never from when a leader happened to notice.
"""
from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from flotilla.proto import objects_pb2 as pb

from .tasks import seconds, timestamp

DEFAULT_DELAY = 5.0  # SwarmKit's (and `docker service create`'s) default restart delay


def delay(task: pb.Task) -> float:
    """The restart delay: the policy's, or 5 s when the policy does not set one."""
    policy = task.spec.restart
    return policy.delay.ToNanoseconds() / 1e9 if policy.HasField("delay") else DEFAULT_DELAY


def recent_restarts(task: pb.Task, now: float) -> list[Timestamp]:
    """The restarts of this slot that count against max_attempts at `now` (inside the window)."""
    policy = task.spec.restart
    if not policy.HasField("window") or policy.window.ToNanoseconds() == 0:
        return list(task.restarts)
    since = now - policy.window.ToNanoseconds() / 1e9
    return [r for r in task.restarts if seconds(r) >= since]


def should_restart(task: pb.Task, now: float) -> bool:
    """Whether an ended task gets a replacement in its slot, per its restart policy."""
    policy = task.spec.restart
    if policy.condition == pb.RestartPolicy.NONE:
        return False
    if policy.condition == pb.RestartPolicy.ON_FAILURE and task.status.state == pb.COMPLETE:
        return False
    return policy.max_attempts == 0 or len(recent_restarts(task, now)) < policy.max_attempts


def restart_due(task: pb.Task) -> float:
    """When the replacement may start: the time the task ended plus the delay."""
    ended_at = seconds(task.status.timestamp) or seconds(task.meta.updated_at)
    return ended_at + delay(task)


def history_after_restart(task: pb.Task, now: float) -> list[Timestamp]:
    """What the replacement records: the restarts still in the window, plus this one."""
    return [*recent_restarts(task, now), timestamp(now)]
