"""The leader's reconcilers, started by the manager only while it holds the leader lease.

`reconcilers(store)` returns them; each has `async run()`, which starts with a full pass over
the store's cache (so whatever a previous leader left half done is finished) and then reacts
to the store's events until cancelled:

- `Orchestrator`: replicated and global orchestrators, the restart supervisor, rescheduling
  of tasks on DOWN or drained nodes, service removal, and the task reaper (one loop, since
  all of them decide per service from the same tasks);
- `Scheduler`: PENDING tasks to ASSIGNED, in batches.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from .orchestrator.reconciler import Orchestrator
from .scheduler.scheduler import Scheduler


class Reconciler(Protocol):
    """What the manager runs while leader."""

    name: str

    async def run(self) -> None: ...


def leader_writer(store) -> Callable[[list], Awaitable[list]]:
    """The reconcilers' only way to write: a batch guarded on the leader key, so that a
    manager that lost its lease cannot write even if cancellation has not reached it yet."""

    async def write(ops: list) -> list:
        return await store.batch(ops, leader_guard=True)

    return write


def reconcilers(store) -> list[Reconciler]:
    """The reconcilers of a leader, sharing one guarded writer."""
    write = leader_writer(store)
    scheduler = Scheduler(store, write)
    return [Orchestrator(store, write, scheduler=scheduler), scheduler]
