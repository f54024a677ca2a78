"""Where a batch of PENDING tasks goes: SwarmKit's algorithm, made cheap for big batches.

Tasks are grouped by service and spec version (global tasks also by their preset node), since
identical tasks pass the same static filters: those run once per group over the nodes, not
once per task. Each group then places its tasks one at a time from a heap ordered by (tasks
of this service on the node, tasks on the node), which spreads a service over nodes and then
evens out nodes' totals; resources and max-replicas are checked as a node is popped, and a
node that fails them is dropped from this group's heap (they only get worse within a batch).
With `spread` preferences the heap sits at the leaves of SwarmKit's tree: each level splits
nodes by a label value, and each task goes down the branch holding the fewest tasks of the
service. Cost: O(nodes) per group plus O(log nodes) per task.
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from flotilla.proto import objects_pb2 as pb

from .constraint import ConstraintError, parse_all
from .filters import Refusal, explain, static_refusal
from .nodeinfo import Cluster, NodeInfo, Usage


@dataclass
class Outcome:
    """The decisions of one batch."""

    assigned: list[tuple[pb.Task, str]] = field(default_factory=list)  # (task, node id)
    unschedulable: dict[str, tuple[pb.Task, str]] = field(default_factory=dict)  # id -> (task, why)


@dataclass
class _Group:
    """Tasks that are interchangeable for placement."""

    spec: pb.TaskSpec
    service_id: str
    tasks: list[pb.Task]


class _Leaf:
    """A heap of candidate nodes for one group."""

    def __init__(self, infos: list[NodeInfo], service_id: str) -> None:
        self.heap = [(i.per_service.get(service_id, 0), i.tasks, i.node.id, i) for i in infos]
        heapq.heapify(self.heap)
        self.count = sum(e[0] for e in self.heap)

    def pick(self, g: _Group, refusals: Counter[Refusal]) -> NodeInfo | None:
        res = g.spec.resources.reservations
        cpus, memory = res.nano_cpus, res.memory_bytes
        max_replicas = g.spec.placement.max_replicas
        while self.heap:
            _, _, node_id, info = self.heap[0]
            if not info.fits(cpus, memory):
                refusals[Refusal.RESOURCES] += 1
            elif max_replicas and info.per_service.get(g.service_id, 0) >= max_replicas:
                refusals[Refusal.MAX_REPLICAS] += 1
            else:
                # The caller records the usage; the counts below are what it will be then.
                heapq.heapreplace(self.heap, (info.per_service.get(g.service_id, 0) + 1, info.tasks + 1, node_id, info))
                self.count += 1
                return info
            heapq.heappop(self.heap)
        return None


class _Branch:
    """One level of the spread tree: children keyed by a label value."""

    def __init__(self, children: dict[str, _Branch | _Leaf]) -> None:
        self.children = children
        self.heap = [(c.count, value) for value, c in children.items()]
        heapq.heapify(self.heap)
        self.count = sum(c.count for c in children.values())

    def pick(self, g: _Group, refusals: Counter[Refusal]) -> NodeInfo | None:
        while self.heap:
            _, value = self.heap[0]
            child = self.children[value]
            info = child.pick(g, refusals)
            if info is None:
                heapq.heappop(self.heap)  # that subtree is full for this group
                continue
            heapq.heapreplace(self.heap, (child.count, value))
            self.count += 1
            return info
        return None


def _label(info: NodeInfo, descriptor: str) -> str:
    """A node's value for a `spread` descriptor; nodes without it share the "" branch."""
    if descriptor.startswith("node.labels."):
        return info.node.spec.annotations.labels.get(descriptor[len("node.labels."):], "")
    if descriptor.startswith("engine.labels."):
        return info.node.description.engine_labels.get(descriptor[len("engine.labels."):], "")
    return ""


def _tree(infos: list[NodeInfo], descriptors: list[str], service_id: str) -> _Branch | _Leaf:
    if not descriptors:
        return _Leaf(infos, service_id)
    split: dict[str, list[NodeInfo]] = defaultdict(list)
    for info in infos:
        split[_label(info, descriptors[0])].append(info)
    return _Branch({v: _tree(members, descriptors[1:], service_id) for v, members in sorted(split.items())})


def _groups(tasks: list[pb.Task]) -> list[_Group]:
    groups: dict[tuple[str, int, str], _Group] = {}
    for t in tasks:
        key = (t.service_id, t.spec_version.index, t.node_id)
        g = groups.get(key)
        if g is None:
            groups[key] = g = _Group(t.spec, t.service_id, [])
        g.tasks.append(t)
    return list(groups.values())


def place(tasks: list[pb.Task], cluster: Cluster) -> Outcome:
    """Decide a node for each task (recording the usage in `cluster`), or say why none fits."""
    out = Outcome()
    for g in _groups(tasks):
        try:
            constraints = parse_all(list(g.spec.placement.constraints))
        except ConstraintError as e:  # the Control API rejects these; older data might not be
            for t in g.tasks:
                out.unschedulable[t.id] = (t, str(e))
            continue
        platforms = list(g.spec.placement.platforms)
        refusals: Counter[Refusal] = Counter()
        preset = g.tasks[0].node_id
        candidates = [cluster.nodes[preset]] if preset in cluster.nodes else [] if preset else list(cluster.nodes.values())
        eligible = []
        for info in candidates:
            why = static_refusal(info.node, constraints, platforms)
            if why is None:
                eligible.append(info)
            else:
                refusals[why] += 1
        descriptors = [p.spread_descriptor for p in g.spec.placement.preferences if p.spread_descriptor]
        root = _tree(eligible, descriptors, g.service_id)
        res = g.spec.resources.reservations
        for i, t in enumerate(g.tasks):
            info = root.pick(g, refusals)
            if info is None:
                why = explain(refusals) if candidates or not preset else f"no suitable node (node {preset} is gone)"
                for rest in g.tasks[i:]:
                    out.unschedulable[rest.id] = (rest, why)
                break
            cluster.set_usage(t.id, Usage(info.node.id, g.service_id, res.nano_cpus, res.memory_bytes))
            out.assigned.append((t, info.node.id))
    return out
