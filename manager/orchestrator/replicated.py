"""The replicated orchestrator: a service owns slots 1..R; every slot gets one runnable task.

Scaling up reuses the numbers of dead slots first (as SwarmKit does), then the lowest free
numbers. Scaling down picks slots whose task is not running first, then takes from the nodes
that run the most tasks of the service, so that what remains stays spread; the removed slots'
tasks get desired REMOVE and the reaper deletes them once they stopped.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping

from flotilla.proto import objects_pb2 as pb

from .slot import reconcile_slot
from .tasks import Plan, latest, new_task, node_usable, runnable


def reconcile_replicated(service: pb.Service, tasks: list[pb.Task], nodes: Mapping[str, pb.Node], now: float,
                         max_new: int | None = None) -> Plan:
    """The writes that bring `service`'s tasks to its replica count and spec; at most
    `max_new` new slots at once (`plan.more` says some were held back)."""
    slots: dict[int, list[pb.Task]] = defaultdict(list)
    for t in tasks:
        if t.desired_state < pb.REMOVE:
            slots[t.slot].append(t)
    decided: dict[int, Plan | None] = {}  # occupied slots and their plans (None: nothing to do)
    version = service.spec_version.index
    for number, slot_tasks in sorted(slots.items()):
        if len(slot_tasks) == 1 and _steady(slot_tasks[0], version, nodes):
            decided[number] = None  # the common case, kept cheap: 100,000-task services are decided often
            continue
        slot_plan = Plan()
        if reconcile_slot(service, slot_tasks, nodes, now, slot_plan, slot=number):
            decided[number] = slot_plan
    plan = Plan()
    want = service.spec.replicated.replicas
    removed: set[int] = set()
    if len(decided) > want:
        removed = _slots_to_remove(list(decided), slots, len(decided) - want)
        for number in removed:
            for t in slots[number]:
                plan.set_desired(t, pb.REMOVE)
    for number, slot_plan in decided.items():
        if slot_plan is not None and number not in removed:
            plan.merge(slot_plan)
    if len(decided) < want:
        dead = sorted(set(slots) - set(decided))
        missing = want - len(decided)
        if max_new is not None and missing > max_new:
            missing, plan.more = max(0, max_new), True
        for number in _new_slot_numbers(dead, set(slots), missing):
            plan.creates.append(new_task(service, number, "", now))
    return plan


def _steady(task: pb.Task, version: int, nodes: Mapping[str, pb.Node]) -> bool:
    """A slot's only task runs (or will) from the current spec on a usable node: nothing to do.
    The same verdict `reconcile_slot` reaches, without its general machinery."""
    return (
        task.desired_state <= pb.RUNNING
        and task.status.state <= pb.RUNNING
        and task.spec_version.index == version
        and (not task.node_id or node_usable(nodes.get(task.node_id)))
    )


def _new_slot_numbers(dead: list[int], used: set[int], count: int) -> list[int]:
    """Slot numbers for `count` new slots: dead ones first, then the lowest never used."""
    numbers = dead[:count]
    candidate = 1
    while len(numbers) < count:
        if candidate not in used:
            numbers.append(candidate)
        candidate += 1
    return numbers


def _slots_to_remove(occupied: list[int], slots: Mapping[int, list[pb.Task]], count: int) -> set[int]:
    """Which occupied slots a scale-down removes (deterministic for the same input)."""
    running: dict[str, list[int]] = defaultdict(list)  # node -> its running slots of this service
    idle: list[int] = []
    for number in occupied:
        live = [t for t in slots[number] if runnable(t)]
        current = latest(live) if live else None
        if current is not None and current.status.state == pb.RUNNING and current.node_id:
            running[current.node_id].append(number)
        else:
            idle.append(number)
    chosen = sorted(idle, reverse=True)[:count]
    heap = [(-len(ns), node, sorted(ns)) for node, ns in running.items()]
    heapq.heapify(heap)
    while len(chosen) < count and heap:
        neg, node, ns = heapq.heappop(heap)
        chosen.append(ns.pop())
        if ns:
            heapq.heappush(heap, (neg + 1, node, ns))
    return set(chosen)
