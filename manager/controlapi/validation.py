"""Validation of user specs: every rejection is one line that says what to fix.

Validation runs before anything is written, so a rejected request never changes state.
Constraints are parsed with the scheduler's own parser, so what is accepted here is exactly
what the scheduler understands.
"""
from __future__ import annotations

import ipaddress
import re

from flotilla.proto import objects_pb2 as pb

from ..scheduler.constraint import ConstraintError, parse_all

MAX_REPLICAS = 100_000
MAX_SPEC_BYTES = 1 << 20
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
ENV_NAME_RE = re.compile(r"^[^=\0]+$")
SPREAD_PREFIXES = ("node.labels.", "engine.labels.")
NETWORK_DRIVERS = ("overlay", "bridge")


class ValidationError(ValueError):
    """A spec that cannot be accepted; the message is shown to the user as is."""


def check_name(kind: str, name: str) -> None:
    if not name:
        raise ValidationError(f"{kind} name is required (e.g. --name web)")
    if not NAME_RE.match(name):
        raise ValidationError(f"{kind} name {name!r} is invalid: use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit")


def check_size(kind: str, spec) -> None:
    size = spec.ByteSize()
    if size > MAX_SPEC_BYTES:
        raise ValidationError(f"{kind} spec is {size} bytes; the limit is {MAX_SPEC_BYTES} bytes (1 MiB)")


def check_resources(which: str, r: pb.Resources) -> None:
    if r.nano_cpus < 0:
        raise ValidationError(f"{which} CPUs must not be negative")
    if r.memory_bytes < 0:
        raise ValidationError(f"{which} memory must not be negative")


def check_duration(what: str, d) -> None:
    if d.seconds < 0 or d.nanos < 0:
        raise ValidationError(f"{what} must not be negative")


def check_task_spec(task: pb.TaskSpec) -> None:
    c = task.container
    if not c.image.strip():
        raise ValidationError("an image is required (e.g. busybox:latest)")
    if any(ch.isspace() for ch in c.image):
        raise ValidationError(f"image reference {c.image!r} must not contain whitespace")
    for item in c.env:
        name = item.partition("=")[0]
        if not ENV_NAME_RE.match(name) or "\0" in item:
            raise ValidationError(f"environment entry {item!r} is invalid: use NAME=value")
    for m in c.mounts:
        if not m.target.startswith("/"):
            raise ValidationError(f"mount target {m.target!r} must be an absolute path")
    # a NUL byte cannot reach execve, a path or a label on the node: refuse it here, at once
    texts = {"command": list(c.command), "args": list(c.args), "working directory": [c.dir], "user": [c.user],
             "hostname": [c.hostname], "stop signal": [c.stop_signal], "label": [*c.labels, *c.labels.values()],
             "mount": [t for m in c.mounts for t in (m.source, m.target)]}
    for what, values in texts.items():
        if any("\0" in v for v in values):
            raise ValidationError(f"{what} must not contain a NUL byte")
    check_duration("stop grace period", c.stop_grace_period)
    res = task.resources
    check_resources("reserved", res.reservations)
    check_resources("limit of", res.limits)
    if res.limits.nano_cpus and res.reservations.nano_cpus > res.limits.nano_cpus:
        raise ValidationError("reserved CPUs exceed the CPU limit")
    if res.limits.memory_bytes and res.reservations.memory_bytes > res.limits.memory_bytes:
        raise ValidationError("reserved memory exceeds the memory limit")
    if res.limits.memory_bytes and res.limits.memory_bytes < 4 << 20:
        raise ValidationError("memory limit must be at least 4 MiB")
    check_duration("restart delay", task.restart.delay)
    check_duration("restart window", task.restart.window)
    try:
        parse_all(list(task.placement.constraints))
    except ConstraintError as e:
        raise ValidationError(f"invalid placement constraint: {e}") from None
    for pref in task.placement.preferences:
        if not pref.spread_descriptor.startswith(SPREAD_PREFIXES) or pref.spread_descriptor in SPREAD_PREFIXES:
            raise ValidationError(f"placement preference spread={pref.spread_descriptor!r} is invalid: use spread=node.labels.<name>")


def check_service_spec(spec: pb.ServiceSpec) -> None:
    check_name("service", spec.annotations.name)
    check_size("service", spec)
    mode = spec.WhichOneof("mode")
    if mode is None:
        raise ValidationError("service mode is required: replicated (with a replica count) or global")
    if mode == "replicated" and spec.replicated.replicas > MAX_REPLICAS:
        raise ValidationError(f"replicas must be between 0 and {MAX_REPLICAS}, got {spec.replicated.replicas}")
    check_task_spec(spec.task)


def check_service_update(old: pb.ServiceSpec, new: pb.ServiceSpec) -> None:
    if old.annotations.name != new.annotations.name:
        raise ValidationError("renaming a service is not supported: remove it and create it again")
    if old.WhichOneof("mode") != new.WhichOneof("mode"):
        raise ValidationError("changing a service's mode (replicated/global) is not supported")


def check_network_spec(spec: pb.NetworkSpec) -> None:
    check_name("network", spec.annotations.name)
    check_size("network", spec)
    if spec.driver and spec.driver not in NETWORK_DRIVERS:
        raise ValidationError(f"network driver {spec.driver!r} is not supported: use one of {', '.join(NETWORK_DRIVERS)}")
    for ipam in spec.ipam:
        try:
            subnet = ipaddress.ip_network(ipam.subnet, strict=True)
        except ValueError as e:
            raise ValidationError(f"subnet {ipam.subnet!r} is invalid: {e}") from None
        for what, value in (("gateway", ipam.gateway), ("range", ipam.range)):
            if not value:
                continue
            try:
                inside = (ipaddress.ip_network(value, strict=False).subnet_of(subnet) if what == "range"
                          else ipaddress.ip_address(value) in subnet)
            except (ValueError, TypeError) as e:
                raise ValidationError(f"{what} {value!r} is invalid: {e}") from None
            if not inside:
                raise ValidationError(f"{what} {value} is outside the subnet {subnet}")


def check_cluster_spec(spec: pb.ClusterSpec) -> None:
    check_size("cluster", spec)
    if spec.orchestration.task_history_retention_limit < 0:
        raise ValidationError("task history retention limit must not be negative")
    hb = spec.dispatcher.heartbeat_period
    check_duration("heartbeat period", hb)
    if (hb.seconds or hb.nanos) and hb.ToNanoseconds() < 100_000_000:
        raise ValidationError("heartbeat period must be at least 100ms")


def check_node_spec(spec: pb.NodeSpec) -> None:
    check_size("node", spec)
    if spec.availability not in pb.NodeSpec.Availability.values():
        raise ValidationError(f"node availability {spec.availability} is invalid: use active, pause or drain")
    if spec.desired_role not in pb.NodeRole.values():
        raise ValidationError(f"node role {spec.desired_role} is invalid: use worker or manager")
