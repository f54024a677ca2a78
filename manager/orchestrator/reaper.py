"""The task reaper: deletes what no one needs to see any more.

- Tasks with desired REMOVE, once their agent can no longer be running them: status ended,
  never assigned, or their node is DOWN or gone.
- History: at most `limit` tasks per slot (per node for global services), running one
  included, as SwarmKit's `task_history_retention_limit`; the oldest stopped ones go first.
  A negative limit keeps everything. A task that may still run on an agent (assigned, not
  yet ended) is never deleted, so that its agent still learns to stop it.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from flotilla.proto import objects_pb2 as pb

from .tasks import ended, runnable, seconds

DEFAULT_HISTORY = 5


def history_limit(cluster: pb.Cluster | None) -> int:
    """The cluster's retention limit; 0 (proto3's "unset") means the default of 5."""
    if cluster is None:
        return DEFAULT_HISTORY
    return cluster.spec.orchestration.task_history_retention_limit or DEFAULT_HISTORY


def _agent_done(task: pb.Task, nodes: Mapping[str, pb.Node]) -> bool:
    """No agent can still be running this task."""
    if ended(task) or task.status.state < pb.ASSIGNED or not task.node_id:
        return True
    node = nodes.get(task.node_id)
    return node is None or (node.status.state == pb.NodeStatus.DOWN and task.desired_state >= pb.REMOVE)


def reap(tasks: list[pb.Task], nodes: Mapping[str, pb.Node], limit: int, skip: set[str] = frozenset()) -> list[pb.Task]:
    """The tasks of one service to delete (`skip`: ids another decision is writing now)."""
    doomed: list[pb.Task] = []
    groups: dict[tuple[int, str], list[pb.Task]] = defaultdict(list)
    for t in tasks:
        if t.id in skip:
            continue
        if t.desired_state >= pb.REMOVE:
            if _agent_done(t, nodes):
                doomed.append(t)
        else:
            groups[(t.slot, t.node_id if t.slot == 0 else "")].append(t)
    if limit < 0:
        return doomed
    for group in groups.values():
        surplus = len(group) - limit
        if surplus <= 0:
            continue
        group.sort(key=lambda t: (seconds(t.status.timestamp), t.id))
        for t in group:
            if surplus <= 0:
                break
            if not runnable(t) and _agent_done(t, nodes):
                doomed.append(t)
                surplus -= 1
    return doomed
