"""Builders of plain protobuf objects for the orchestrator and scheduler unit tests."""
from __future__ import annotations

import itertools

from flotilla.manager.orchestrator.tasks import Plan, timestamp
from flotilla.proto import objects_pb2 as pb

_clock = itertools.count(1)


def node(nid: str, state=pb.NodeStatus.READY, availability=pb.NodeSpec.ACTIVE, cpus=4, mem_gib=8, labels=None, engine=None, role=pb.WORKER) -> pb.Node:
    n = pb.Node(id=nid, role=role)
    n.status.state = state
    n.spec.availability = availability
    n.description.hostname = f"host-{nid}"
    n.description.platform.os = "linux"
    n.description.platform.architecture = "x86_64"
    n.description.resources.nano_cpus = cpus * 10**9
    n.description.resources.memory_bytes = mem_gib << 30
    n.spec.annotations.labels.update(labels or {})
    n.description.engine_labels.update(engine or {})
    return n


def service(sid="svc", replicas=3, version=1, restart=None, constraints=(), global_=False) -> pb.Service:
    s = pb.Service(id=sid)
    s.spec.annotations.name = sid
    s.spec.task.container.image = "busybox"
    if global_:
        s.spec.__getattribute__("global").SetInParent()
    else:
        s.spec.replicated.replicas = replicas
    s.spec_version.index = version
    if restart is not None:
        s.spec.task.restart.CopyFrom(restart)
    s.spec.task.placement.constraints.extend(constraints)
    return s


def task(svc: pb.Service, slot: int, state=pb.RUNNING, desired=pb.RUNNING, node_id="n1", version=None, status_at=None, restarts=()) -> pb.Task:
    t = pb.Task(id=f"t{next(_clock)}", service_id=svc.id, slot=slot, node_id=node_id, desired_state=desired)
    t.spec.CopyFrom(svc.spec.task)
    t.spec_version.index = svc.spec_version.index if version is None else version
    t.status.state = state
    tick = next(_clock)
    t.meta.created_at.CopyFrom(timestamp(tick))
    t.meta.version.index = tick
    t.status.timestamp.CopyFrom(timestamp(status_at if status_at is not None else tick))
    t.restarts.extend(timestamp(r) for r in restarts)
    return t


def desired(plan: Plan) -> dict[str, int]:
    """task id -> the desired state a plan writes."""
    return {t.id: t.desired_state for t in plan.updates}
