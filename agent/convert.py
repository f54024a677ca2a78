"""Translate between the API's protobuf messages and the runtime's dataclasses.

Values that need validation (memory strings, restart policies) are parsed here with the
runtime's own parsers, so a bad value is refused with the runtime's one-line message before
anything is created.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flotilla.proto import runtime_pb2 as pb
from flotilla.runtime import spec as rspec
from flotilla.runtime.errors import InvalidArgument


def parse_restart_policy(text: str) -> rspec.RestartPolicy:
    """`no`, `always`, `unless-stopped`, `on-failure` or `on-failure:N` (Docker's syntax)."""
    name, sep, count = (text or "no").partition(":")
    if not sep:
        return rspec.RestartPolicy(name=name)
    if name != "on-failure":
        raise InvalidArgument(f"invalid restart policy {text!r}: only on-failure takes a maximum retry count")
    try:
        retries = int(count)
    except ValueError:
        raise InvalidArgument(f"invalid restart policy {text!r}: the retry count must be a number") from None
    return rspec.RestartPolicy(name=name, max_retries=retries)


def spec_from_proto(msg: pb.ContainerSpec) -> rspec.ContainerSpec:
    """Build the runtime's ContainerSpec; parses memory and restart policy strings."""
    spec = rspec.ContainerSpec(
        image=msg.image,
        name=msg.name,
        cmd=list(msg.cmd) if msg.cmd_set else None,
        entrypoint=list(msg.entrypoint) if msg.entrypoint_set else None,
        env=list(msg.env),
        workdir=msg.workdir,
        user=msg.user,
        hostname=msg.hostname,
        tty=msg.tty,
        stdin_open=msg.stdin_open,
        mounts=[rspec.Mount(m.source, m.destination, m.readonly) for m in msg.mounts],
        readonly_rootfs=msg.readonly_rootfs,
        restart_policy=parse_restart_policy(msg.restart_policy),
        auto_remove=msg.auto_remove,
        network_mode=msg.network_mode or "bridge",
        memory=rspec.parse_memory(msg.memory) if msg.memory else 0,
        cpus=msg.cpus,
        cpu_shares=msg.cpu_shares,
        pids_limit=msg.pids_limit,
        labels=dict(msg.labels),
        ip=msg.ip,
        network_aliases=list(msg.network_aliases),
        ports=list(msg.ports),
        publish_all=msg.publish_all,
        init=msg.init,
    )
    if msg.stop_signal:
        spec.stop_signal = msg.stop_signal
    if msg.stop_timeout_set:
        spec.stop_timeout = msg.stop_timeout
    return spec


def exec_spec_from_proto(msg: pb.ExecSpec) -> rspec.ExecSpec:
    return rspec.ExecSpec(cmd=list(msg.cmd), env=list(msg.env), user=msg.user, workdir=msg.workdir,
                          tty=msg.tty, stdin_open=msg.stdin_open)


def to_epoch(value: Any) -> float:
    """Seconds since the epoch from whatever the runtime stores (float, RFC3339 text or None)."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    if text.startswith("0001-01-01"):
        return 0.0
    text = text.replace("Z", "+00:00")
    main, dot, rest = text.partition(".")
    if dot:  # fromisoformat takes at most microseconds: cut nanoseconds
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{main}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    return datetime.fromisoformat(text).timestamp()


def container_to_proto(info: Any) -> pb.ContainerInfo:
    spec = getattr(info, "spec", None)
    return pb.ContainerInfo(
        id=info.id, name=info.name, image=info.image, image_id=info.image_id or "",
        command=info.command or "", created=to_epoch(info.created), status=info.status,
        exit_code=int(info.exit_code or 0), pid=int(info.pid or 0),
        started_at=to_epoch(info.started_at), finished_at=to_epoch(info.finished_at),
        restart_count=int(info.restart_count or 0),
        labels=dict(spec.labels) if spec is not None else {},
        ports=[pb.PortBinding(container_port=p.container_port, proto=p.proto, host_ip=p.host_ip or "0.0.0.0",
                              host_port=p.host_port) for p in getattr(info, "ports", [])],
    )


def image_to_proto(info: Any) -> pb.ImageInfo:
    return pb.ImageInfo(id=info.id, repo_tags=list(info.repo_tags), created=to_epoch(info.created),
                        size=int(info.size or 0), config_json=json.dumps(info.config or {}))


def volume_to_proto(info: Any) -> pb.VolumeInfo:
    return pb.VolumeInfo(name=info.name, mountpoint=str(info.mountpoint), created=to_epoch(info.created),
                         labels=dict(info.labels or {}))


def changes_from_json(text: str) -> dict | None:
    """The `--change` dict a client sent, or None; a malformed document is the client's error."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"invalid image changes: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("invalid image changes: expected a JSON object")
    return value
