"""Service removal: every task of a removed (or pending_delete) service gets desired REMOVE."""
from __future__ import annotations

from flotilla.proto import objects_pb2 as pb

from .tasks import Plan


def reconcile_removed(tasks: list[pb.Task]) -> Plan:
    """Mark every task of a service that is gone for removal; the reaper deletes them later."""
    plan = Plan()
    for t in tasks:
        plan.set_desired(t, pb.REMOVE)
    return plan
