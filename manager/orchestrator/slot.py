"""What happens to one slot (replicated) or one node's task (global): SwarmKit's rules.

Both orchestrators group a service's tasks (replicated: by slot; global: by node) and hand
each group to `reconcile_slot`, which keeps, restarts, moves or updates its task and says
whether the group is still occupied (counts towards the service's replicas).
"""
from __future__ import annotations

from collections.abc import Mapping

from flotilla.proto import objects_pb2 as pb

from . import restart
from .tasks import SELF_ENDED, Plan, age_key, ended, latest, new_task, node_usable, runnable


def reconcile_slot(
    service: pb.Service,
    tasks: list[pb.Task],
    nodes: Mapping[str, pb.Node],
    now: float,
    plan: Plan,
    *,
    slot: int,
    node_id: str = "",
    may_move: bool = True,
) -> bool:
    """Decide for one slot's tasks (REMOVE tasks excluded); return whether the slot is occupied.

    `node_id` is set for global services (the replacement stays on that node); `may_move` is
    False for them, since a global task never moves: the global orchestrator shuts it down
    when its node becomes ineligible instead.
    """
    live = sorted((t for t in tasks if runnable(t)), key=age_key)
    if not live:
        return _finished(service, tasks, now)
    current = live[-1]
    for extra in live[:-1]:  # two runnable tasks in one slot: a write was cut in half; keep the newest
        plan.set_desired(extra, pb.SHUTDOWN)

    if may_move and current.node_id and not ended(current) and not node_usable(nodes.get(current.node_id)):
        # Node DOWN, drained or gone: replace in the slot elsewhere; the old task is shut
        # down (it becomes ORPHANED only if its node ever reports it, as in SwarmKit).
        plan.creates.append(new_task(service, slot, node_id, now, list(current.restarts)))
        plan.set_desired(current, pb.SHUTDOWN)
        return True
    if ended(current):
        if not restart.should_restart(current, now):
            plan.set_desired(current, pb.SHUTDOWN)
            return True  # finished: stays so until the service changes
        due = restart.restart_due(current)
        if now < due:
            plan.wake(due)
            return True
        restarts = restart.history_after_restart(current, now) if current.spec_version == service.spec_version else []
        plan.creates.append(new_task(service, slot, node_id, now, restarts))
        plan.set_desired(current, pb.SHUTDOWN)
        return True
    if current.spec_version != service.spec_version:
        # Rolling updates are not built: every outdated task is replaced at once.
        plan.creates.append(new_task(service, slot, node_id, now))
        plan.set_desired(current, pb.SHUTDOWN)
    return True


def _finished(service: pb.Service, tasks: list[pb.Task], now: float) -> bool:
    """A slot with no runnable task is occupied only when its last task ended for good.

    That is: it stopped by itself (COMPLETE / FAILED / REJECTED), its restart policy says no
    more, and it ran the current spec (a spec change runs finished slots again).
    """
    if not tasks:
        return False
    last = latest(tasks)
    return (
        last.desired_state == pb.SHUTDOWN
        and last.status.state in SELF_ENDED
        and last.spec_version == service.spec_version
        and not restart.should_restart(last, now)
    )
