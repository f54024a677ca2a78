"""How a cluster task becomes a local container, and how a container is recognised as a task's.

The container carries Docker's swarm labels (`com.docker.swarm.task.id` and friends), so the
labels alone are enough to find a task's container again after an agent restart: the agent
keeps no task bookkeeping of its own that could disagree with the runtime's files.
"""
from __future__ import annotations

import math

from flotilla.proto import objects_pb2 as pb
from flotilla.proto import runtime_pb2 as rpb
from flotilla.runtime import spec as rspec
from flotilla.runtime.errors import InvalidArgument

from .convert import spec_from_proto

LABEL_TASK_ID = "com.docker.swarm.task.id"
LABEL_TASK_NAME = "com.docker.swarm.task.name"
LABEL_SERVICE_ID = "com.docker.swarm.service.id"
LABEL_SERVICE_NAME = "com.docker.swarm.service.name"
LABEL_NODE_ID = "com.docker.swarm.node.id"
DEFAULT_GRACE = 10  # seconds, Docker's default stop grace period


def task_name(task: pb.Task) -> str:
    """`SERVICE.SLOT` (replicated) or `SERVICE.NODEID` (global), as the orchestrator names it."""
    if task.annotations.name:
        return task.annotations.name
    service = task.service_annotations.name or task.service_id
    return f"{service}.{task.slot}" if task.slot else f"{service}.{task.node_id}"


def container_name(task: pb.Task) -> str:
    """Docker's task container name: `SERVICE.SLOT.TASKID`."""
    return f"{task_name(task)}.{task.id}"


def task_labels(task: pb.Task, node_id: str) -> dict[str, str]:
    """The user's container labels plus the swarm labels that identify the task."""
    labels = dict(task.spec.container.labels)
    labels.update({
        LABEL_TASK_ID: task.id,
        LABEL_TASK_NAME: container_name(task),
        LABEL_SERVICE_ID: task.service_id,
        LABEL_SERVICE_NAME: task.service_annotations.name or task.service_id,
        LABEL_NODE_ID: node_id,
    })
    return labels


def grace_seconds(task: pb.Task) -> int:
    """The stop grace period in whole seconds (rounded up, so a grace is never shortened)."""
    c = task.spec.container
    if not c.HasField("stop_grace_period"):
        return DEFAULT_GRACE
    return max(0, math.ceil(c.stop_grace_period.ToNanoseconds() / 1e9))


def port_specs(task: pb.Task) -> list[str]:
    """Host-mode published ports as the runtime's `-p` texts (`8080:80/tcp`, `80/udp` for a free port)."""
    out = []
    for p in task.spec.endpoint.ports:
        proto = "udp" if p.protocol == pb.PortConfig.UDP else "tcp"
        out.append(f"{p.published_port}:{p.target_port}/{proto}" if p.published_port else f"{p.target_port}/{proto}")
    return out


def container_spec(task: pb.Task, node_id: str, network: str = "none", aliases: list[str] | None = None) -> rspec.ContainerSpec:
    """The runtime spec of a task's container, through the one proto → runtime conversion the
    local API uses (`convert.spec_from_proto`), so both validate a spec the same way.

    The restart policy is always "no": the manager's restart supervisor decides whether a
    task that ended is replaced, so the agent must never restart a task container itself.
    `network` is the task's first cluster network (built by `TaskNetworks`), `none` for a task
    without networks (isolated and cheap), or the default `bridge` when it only publishes ports.
    """
    c = task.spec.container
    limits = task.spec.resources.limits
    for m in c.mounts:
        if m.type == pb.Mount.BIND and not m.source.startswith("/"):
            raise InvalidArgument(f"invalid mount config: bind source {m.source!r} must be an absolute path")
    ports = port_specs(task)
    if ports and network == "none":
        network = "bridge"
    return spec_from_proto(rpb.ContainerSpec(
        image=c.image,
        name=container_name(task),
        cmd=c.args, cmd_set=bool(c.args),
        entrypoint=c.command, entrypoint_set=bool(c.command),
        env=c.env,
        workdir=c.dir,
        user=c.user,
        hostname=c.hostname,
        tty=c.tty,
        stdin_open=c.open_stdin,
        mounts=[rpb.Mount(source=m.source, destination=m.target, readonly=m.readonly) for m in c.mounts],
        readonly_rootfs=c.read_only,
        init=c.init,
        restart_policy="no",
        network_mode=network,
        network_aliases=aliases or [],
        ports=ports,
        memory=str(limits.memory_bytes) if limits.memory_bytes else "",
        cpus=limits.nano_cpus / 1e9,
        labels=task_labels(task, node_id),
        stop_signal=c.stop_signal or "SIGTERM",
        stop_timeout=grace_seconds(task), stop_timeout_set=True,
    ))
