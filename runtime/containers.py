"""Container records on disk and the rules that turn a spec plus an image into a process.

`containers/<id>/config.json` holds the spec, the resolved process (args, env, cwd, user), the
image's lower dirs, the mounts and the runtime state (pids with their start times, times, exit
code, restart count). It is written atomically; the *status* is never stored but derived from
the files the shim leaves (exit file, shim pid alive) so it is right after any crash.
"""
from __future__ import annotations

import os
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidArgument
from .fsutil import atomic_write_json, fsync_dir, read_json, remove_tree, sweep_temps
from .images import DEFAULT_PATH
from .spec import ContainerSpec, merge_env

_ID_RE = re.compile(r"^[0-9a-f]{64}$")
BUNDLE_DIRS = ("upper", "work", "rootfs", "exec")


@dataclass
class ContainerInfo:
    """What `docker ps` shows about one container."""

    id: str
    name: str
    image: str
    image_id: str
    command: str
    created: float
    status: str
    exit_code: int
    pid: int
    started_at: float
    finished_at: float
    restart_count: int
    spec: ContainerSpec
    ports: list = field(default_factory=list)  # published PortMappings while running


def resolve_process(spec: ContainerSpec, image: dict[str, Any], cid: str) -> dict[str, Any]:
    """Combine the image config with the spec exactly as Docker does.

    - `entrypoint` given (even []) replaces the image ENTRYPOINT *and* resets the image CMD;
    - `cmd` given replaces CMD; the process is ENTRYPOINT + CMD;
    - env: HOSTNAME (and TERM with a tty), then the image's ENV, then the spec's, later names win;
      PATH gets Docker's default when nobody set it;
    - workdir and user fall back to the image's, then to "/" and root.
    """
    entrypoint = list(spec.entrypoint) if spec.entrypoint is not None else list(image.get("Entrypoint") or [])
    if spec.cmd is not None:
        cmd = list(spec.cmd)
    elif spec.entrypoint is not None:
        cmd = []
    else:
        cmd = list(image.get("Cmd") or [])
    args = entrypoint + cmd
    if not args:
        raise InvalidArgument("no command specified: give a command or use an image with a CMD or ENTRYPOINT")
    hostname = socket.gethostname() if spec.network_mode == "host" else (spec.hostname or cid[:12])
    base = [f"HOSTNAME={hostname}"] + (["TERM=xterm"] if spec.tty else [])
    env = merge_env(base + list(image.get("Env") or []), spec.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    stop_signal = spec.stop_signal
    if stop_signal == "SIGTERM" and image.get("StopSignal"):
        stop_signal = image["StopSignal"]
    return {
        "args": args, "entrypoint": entrypoint, "cmd": cmd, "env": env, "hostname": hostname,
        "cwd": spec.workdir or image.get("WorkingDir") or "/", "user": spec.user or image.get("User") or "",
        "stop_signal": stop_signal,
    }


def command_string(args: list[str]) -> str:
    return shlex.join(args)


def new_state() -> dict[str, Any]:
    """The runtime part of a fresh record: never started."""
    return {"pid": 0, "pid_start": 0, "shim_pid": 0, "shim_start": 0, "started_at": 0.0, "finished_at": 0.0,
            "exit_code": 0, "oom_killed": False, "error": "", "restart_count": 0, "finalized": True}


class ContainerStore:
    """Bundle directories and their config.json, with an in-memory cache of the records."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "containers"
        self.dir.mkdir(exist_ok=True)
        self.records: dict[str, dict[str, Any]] = {}
        for entry in self.dir.iterdir():
            if _ID_RE.match(entry.name):
                self.records[entry.name] = read_json(entry / "config.json")

    def bundle(self, cid: str) -> Path:
        return self.dir / cid

    def create(self, record: dict[str, Any]) -> Path:
        """Publish a new bundle atomically: everything is made in a temp dir, then renamed."""
        tmp = self.dir / f".tmp-{record['id']}"
        tmp.mkdir()
        try:
            for d in BUNDLE_DIRS:
                (tmp / d).mkdir()
            atomic_write_json(tmp / "config.json", record)
            os.rename(tmp, self.bundle(record["id"]))
            fsync_dir(self.dir)
        except BaseException:
            remove_tree(tmp)
            raise
        self.records[record["id"]] = record
        return self.bundle(record["id"])

    def save(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.bundle(record["id"]) / "config.json", record)
        self.records[record["id"]] = record

    def delete(self, cid: str) -> None:
        remove_tree(self.bundle(cid))
        self.records.pop(cid, None)

    def sweep(self) -> None:
        sweep_temps(self.dir)
