"""What a caller asks for: container, mount, restart and exec specs, and their validation.

These dataclasses are the contract with the agent. Validation lives here so that a bad request
is refused with one line saying what to fix before anything is created on disk.
"""
from __future__ import annotations

import os
import re
import signal as _signal
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InvalidArgument

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses less: the container could not even start
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@dataclass
class Mount:
    """`-v SRC:DST[:ro]`: an absolute SRC is a bind mount, a name a named volume, "" an anonymous volume."""

    source: str
    destination: str
    readonly: bool = False

    @property
    def is_bind(self) -> bool:
        return self.source.startswith("/")


@dataclass
class RestartPolicy:
    """Docker's restart policy; the agent's monitor enforces it, the runtime only stores it."""

    name: str = "no"
    max_retries: int = 0


@dataclass
class ContainerSpec:
    """Everything `docker create` takes that this runtime supports."""

    image: str
    name: str = ""
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    tty: bool = False
    stdin_open: bool = False
    mounts: list[Mount] = field(default_factory=list)
    readonly_rootfs: bool = False
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    auto_remove: bool = False
    network_mode: str = "bridge"   # bridge (default), host, none or a user network's name
    memory: int = 0
    cpus: float = 0.0
    cpu_shares: int = 0
    pids_limit: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = "SIGTERM"
    stop_timeout: int = 10
    ip: str = ""                   # --ip: static address on the network of network_mode
    network_aliases: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)  # -p specs as typed (parse_port_spec)
    publish_all: bool = False      # -P: every EXPOSEd port of the image on a random host port
    init: bool = False             # --init: an init as pid 1 forwards signals to the command and reaps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ContainerSpec":
        d = dict(d)
        d["mounts"] = [Mount(**m) for m in d.get("mounts", [])]
        d["restart_policy"] = RestartPolicy(**d.get("restart_policy", {}))
        return cls(**d)


@dataclass
class ExecSpec:
    """`docker exec` options."""

    cmd: list[str]
    env: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    tty: bool = False
    stdin_open: bool = False


def parse_memory(text: str) -> int:
    """Parse a Docker memory string ("512m", "1.5g", "64MiB", "1024") into bytes (binary units)."""
    m = _MEMORY_RE.match(text.strip())
    if not m:
        raise InvalidArgument(f"invalid memory size: {text!r} (use a number with an optional unit b, k, m, g, e.g. 512m)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def parse_signal(sig: str | int) -> int:
    """Map "KILL", "SIGKILL", "sigterm" or "9" to a signal number."""
    text = str(sig).strip()
    if text.isdigit():
        num = int(text)
        if 0 < num < _signal.NSIG:
            return num
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        value = getattr(_signal.Signals, name, None) if name in _signal.Signals.__members__ else None
        if value is not None:
            return int(value)
    raise InvalidArgument(f"invalid signal: {sig!r} (use a name like SIGTERM or a number)")


def check_env(env: list[str], what: str = "environment variable") -> None:
    """Every entry must be NAME=value with a non-empty NAME."""
    for item in env:
        if "=" not in item or item.startswith("=") or "\0" in item:
            raise InvalidArgument(f"invalid {what} {item!r}: expected NAME=value")


def merge_env(base: list[str], overrides: list[str]) -> list[str]:
    """Docker's rule: later entries replace earlier ones with the same NAME, order kept."""
    merged: dict[str, str] = {}
    for item in [*base, *overrides]:
        name, _, value = item.partition("=")
        merged[name] = value
    return [f"{k}={v}" for k, v in merged.items()]


def validate_spec(spec: ContainerSpec) -> None:
    """Refuse a spec that cannot be honoured, with a message that says what to fix."""
    if spec.name and not NAME_RE.match(spec.name):
        raise InvalidArgument(f"invalid container name {spec.name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if spec.cmd is not None and any("\0" in a for a in spec.cmd):
        raise InvalidArgument("invalid command: arguments may not contain NUL bytes")
    check_env(spec.env)
    if spec.workdir and not spec.workdir.startswith("/"):
        raise InvalidArgument(f"the working directory {spec.workdir!r} is invalid, it needs to be an absolute path")
    if spec.memory < 0 or (0 < spec.memory < MIN_MEMORY):
        raise InvalidArgument("minimum memory limit allowed is 6MB")
    ncpu = os.cpu_count() or 1
    if spec.cpus < 0 or spec.cpus > ncpu or (0 < spec.cpus < 0.01):
        raise InvalidArgument(f"range of CPUs is from 0.01 to {ncpu:.2f}, as there are only {ncpu} CPUs available")
    if spec.cpu_shares < 0 or (0 < spec.cpu_shares < 2) or spec.cpu_shares > 262144:
        raise InvalidArgument("cpu shares must be between 2 and 262144 (0 = default)")
    if spec.pids_limit < 0:
        raise InvalidArgument("pids limit must be 0 (unlimited) or positive")
    if not spec.network_mode:
        raise InvalidArgument("network mode is empty: use bridge, host, none or a network's name")
    if spec.stop_timeout < 0:
        raise InvalidArgument("stop timeout must not be negative")
    parse_signal(spec.stop_signal)
    if not isinstance(spec.init, bool):
        raise InvalidArgument(f"init must be true or false, got {spec.init!r}")
    validate_restart_policy(spec.restart_policy, spec.auto_remove)
    seen: set[str] = set()
    for m in spec.mounts:
        validate_mount(m)
        dst = os.path.normpath(m.destination)
        if dst in seen:
            raise InvalidArgument(f"duplicate mount point: {m.destination}")
        seen.add(dst)
    for key, value in spec.labels.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise InvalidArgument(f"invalid label {key!r}: labels are non-empty string keys with string values")


def validate_restart_policy(policy: RestartPolicy, auto_remove: bool) -> None:
    """Docker's rules for --restart and --rm."""
    if policy.name not in RESTART_POLICIES:
        raise InvalidArgument(f"invalid restart policy {policy.name!r} (use one of: {', '.join(RESTART_POLICIES)})")
    if policy.max_retries < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
    if policy.max_retries and policy.name != "on-failure":
        raise InvalidArgument(f"invalid restart policy: maximum retry count cannot be used with restart policy {policy.name!r}")
    if auto_remove and policy.name != "no":
        raise InvalidArgument("conflicting options: cannot combine auto-remove (--rm) with a restart policy")


def validate_mount(m: Mount) -> None:
    """Destination absolute and not /, source an absolute path or a valid volume name."""
    if not m.destination.startswith("/"):
        raise InvalidArgument(f"invalid mount config: mount path must be absolute: {m.destination}")
    if os.path.normpath(m.destination) == "/":
        raise InvalidArgument("invalid mount config: destination can't be '/'")
    if "\0" in m.destination or "\t" in m.destination or "\0" in m.source or "\t" in m.source:
        raise InvalidArgument("invalid mount config: paths may not contain NUL or tab characters")
    if m.source and not m.is_bind and not NAME_RE.match(m.source):
        raise InvalidArgument(
            f"invalid mount config: {m.source!r} includes invalid characters for a local volume name, "
            "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed; use an absolute path for a bind mount")
