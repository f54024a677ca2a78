"""The global orchestrator: one task of the service on every eligible node.

Eligible: READY, ACTIVE, matching the constraints and platforms (the scheduler's static
filters). A PAUSEd, UNKNOWN or DISCONNECTED node keeps the task it has but gets no new one
(a manager restart must not stop every global task); a node that becomes ineligible
otherwise (DOWN, drained, labels changed) gets its task shut down; a node that is removed
gets its tasks marked REMOVE. Tasks are created with their node already set; the
scheduler still checks that the node fits (resources) before moving them to ASSIGNED.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from flotilla.proto import objects_pb2 as pb

from ..scheduler.constraint import parse_all
from ..scheduler.filters import Refusal, static_refusal
from .slot import reconcile_slot
from .tasks import Plan, new_task, node_usable, runnable


def reconcile_global(service: pb.Service, tasks: list[pb.Task], nodes: Mapping[str, pb.Node], now: float) -> Plan:
    """The writes that give every eligible node exactly one runnable task of `service`."""
    plan = Plan()
    by_node: dict[str, list[pb.Task]] = defaultdict(list)
    for t in tasks:
        if t.desired_state < pb.REMOVE:
            by_node[t.node_id].append(t)
    placement = service.spec.task.placement
    constraints = parse_all(list(placement.constraints))
    platforms = list(placement.platforms)
    for node_id, node in nodes.items():
        refusal = static_refusal(node, constraints, platforms)
        node_tasks = by_node.pop(node_id, [])
        if refusal is None:
            if not reconcile_slot(service, node_tasks, nodes, now, plan, slot=0, node_id=node_id, may_move=False):
                plan.creates.append(new_task(service, 0, node_id, now))
        elif refusal is Refusal.NOT_AVAILABLE and node_usable(node):
            continue  # PAUSE, UNKNOWN, DISCONNECTED: what runs keeps running, nothing new starts
        else:
            for t in node_tasks:
                if runnable(t):
                    plan.set_desired(t, pb.SHUTDOWN)
    for orphans in by_node.values():  # nodes that no longer exist
        for t in orphans:
            plan.set_desired(t, pb.REMOVE)
    return plan
