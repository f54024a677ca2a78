"""What the scheduler knows of each node: free resources and task counts, kept incrementally.

`Cluster` is the scheduler's in-memory model. It is fed every task and node change (and the
scheduler's own decisions before they are written), and `account` makes a task's
contribution match what the task says now, so that feeding the same task twice, or an older
copy after a newer one was decided, never double-counts.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from flotilla.proto import objects_pb2 as pb


@dataclass(slots=True)
class NodeInfo:
    """A node and what its assigned, not yet ended, tasks use of it."""

    node: pb.Node
    free_cpus: int = 0
    free_memory: int = 0
    tasks: int = 0
    per_service: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def fits(self, cpus: int, memory: int) -> bool:
        """The node has room for a task reserving `cpus` nano-CPUs and `memory` bytes."""
        return cpus <= self.free_cpus and memory <= self.free_memory


@dataclass(frozen=True, slots=True)
class Usage:
    """One task's contribution to one node."""

    node_id: str
    service_id: str
    cpus: int
    memory: int


def usage(task: pb.Task) -> Usage | None:
    """What `task` takes from its node: from ASSIGNED until it ended (as SwarmKit counts)."""
    if not task.node_id or not pb.ASSIGNED <= task.status.state <= pb.RUNNING:
        return None
    res = task.spec.resources.reservations
    return Usage(task.node_id, task.service_id, res.nano_cpus, res.memory_bytes)


class Cluster:
    """Nodes and the usage of every task on them."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self._usage: dict[str, Usage] = {}
        self._reserved: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # node -> cpus, memory, tasks
        self._per_service: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def set_node(self, node: pb.Node) -> None:
        """Add or refresh a node (resources recomputed from its description)."""
        cpus, memory, count = self._reserved[node.id]
        info = self.nodes.get(node.id)
        if info is None:
            info = self.nodes[node.id] = NodeInfo(node, per_service=self._per_service[node.id])
        info.node = node
        info.free_cpus = node.description.resources.nano_cpus - cpus
        info.free_memory = node.description.resources.memory_bytes - memory
        info.tasks = count

    def remove_node(self, node_id: str) -> None:
        """Forget a deleted node (its tasks' usage stays recorded until they change)."""
        self.nodes.pop(node_id, None)

    def account(self, task_id: str, task: pb.Task | None) -> bool:
        """Make `task_id`'s usage match `task` (None: deleted). True when something was freed."""
        return self.set_usage(task_id, usage(task) if task is not None else None)

    def set_usage(self, task_id: str, new: Usage | None) -> bool:
        """Record what `task_id` uses now (the scheduler calls this for its own decisions)."""
        old = self._usage.get(task_id)
        if old == new:
            return False
        if old is not None:
            self._apply(old, -1)
            del self._usage[task_id]
        if new is not None:
            self._apply(new, +1)
            self._usage[task_id] = new
        return old is not None

    def _apply(self, u: Usage, sign: int) -> None:
        r = self._reserved[u.node_id]
        r[0] += sign * u.cpus
        r[1] += sign * u.memory
        r[2] += sign
        counts = self._per_service[u.node_id]
        counts[u.service_id] += sign
        if not counts[u.service_id]:
            del counts[u.service_id]
        info = self.nodes.get(u.node_id)
        if info is not None:
            info.free_cpus -= sign * u.cpus
            info.free_memory -= sign * u.memory
            info.tasks += sign
