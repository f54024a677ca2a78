"""The scheduler's node filters and the words they use to explain a refusal.

Filters split in two: static ones (`static_refusal`: node ready and active, constraints,
platform) depend only on the node and the task spec, so the scheduler evaluates them once per
group of identical tasks; dynamic ones (resources, max replicas per node) change with every
task placed and are checked when a node is picked. The global orchestrator uses the static
ones to decide which nodes a global service runs on.
"""
from __future__ import annotations

from collections import Counter
from enum import Enum

from flotilla.proto import objects_pb2 as pb

from .constraint import Constraint, matches_all

# Spellings of the same architecture (Go's names and the kernel's).
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armv7l": "arm"}


class Refusal(Enum):
    """Why a node cannot take a task; the value is the explanation's noun phrase."""

    NOT_AVAILABLE = "not available for new tasks"
    CONSTRAINTS = "not satisfying the scheduling constraints"
    PLATFORM = "with an unsupported platform"
    RESOURCES = "with insufficient resources"
    MAX_REPLICAS = "at the max replicas per node limit"


def node_available(node: pb.Node) -> bool:
    """READY and ACTIVE: the node may receive new tasks."""
    return node.status.state == pb.NodeStatus.READY and node.spec.availability == pb.NodeSpec.ACTIVE


def _arch(name: str) -> str:
    name = name.lower()
    return _ARCH_ALIASES.get(name, name)


def platform_ok(node: pb.Node, platforms: list[pb.Platform]) -> bool:
    """The node's os/arch is one the placement allows (an empty list or field allows any)."""
    if not platforms:
        return True
    mine = node.description.platform
    return any(
        (not p.os or p.os.lower() == mine.os.lower())
        and (not p.architecture or _arch(p.architecture) == _arch(mine.architecture))
        for p in platforms
    )


def static_refusal(node: pb.Node, constraints: list[Constraint], platforms: list[pb.Platform]) -> Refusal | None:
    """The first static filter `node` fails for a task spec, or None when it passes them all."""
    if not node_available(node):
        return Refusal.NOT_AVAILABLE
    if constraints and not matches_all(constraints, node):
        return Refusal.CONSTRAINTS
    if not platform_ok(node, platforms):
        return Refusal.PLATFORM
    return None


def explain(refusals: Counter[Refusal]) -> str:
    """SwarmKit's message for a task that fits nowhere, e.g.
    `no suitable node (2 nodes not available for new tasks; 1 node with insufficient resources)`.
    """
    parts = [f"{n} node{'s' if n != 1 else ''} {r.value}" for r, n in sorted(refusals.items(), key=lambda kv: list(Refusal).index(kv[0])) if n]
    return f"no suitable node ({'; '.join(parts)})" if parts else "no suitable node (no nodes in the cluster)"
