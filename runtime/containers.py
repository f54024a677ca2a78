"""Container records on disk and the rules that turn a spec plus an image into a process.

A record holds the spec, the resolved process (args, env, cwd, user), the image's lower dirs,
the mounts and the runtime state (pids with their start times, times, exit code, restart count).
The *status* is never stored but derived from the files the shim leaves (exit file, shim pid
alive) so it is right after any crash.

On disk a record is `containers/<id>/config.json` (written at create, atomically) followed by
`state.log`, a journal of complete records, one JSON line per change, appended with one write(2):
the last line that parses is the record. Replacing config.json by rename on every change cost
~1.4 ms per save on this ext4 (a rename over an existing file makes ext4 allocate and flush the
new file's blocks, `auto_da_alloc`), an append ~20 us; a container is saved at least twice per
run (start, exit). A kill -9 cannot tear a write(2); a power loss may lose or tear the newest
line unless it was fsynced (`durable`), and then the line before it (or config.json) holds.
After COMPACT_AFTER lines the newest record becomes config.json again and the journal goes.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidArgument, RuntimeFault
from .fsutil import Reaper, atomic_write_bytes, atomic_write_json, read_json, remove_tree, sweep_temps, to_trash
from .images import DEFAULT_PATH
from .spec import ContainerSpec, merge_env

_ID_RE = re.compile(r"^[0-9a-f]{64}$")
BUNDLE_DIRS = ("upper", "work", "rootfs", "exec")
JOURNAL = "state.log"
COMPACT_AFTER = 32


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
        self.reaper = Reaper()
        self._lines: dict[str, int] = {}  # journal lines per container, for compaction
        for entry in self.dir.iterdir():
            if _ID_RE.match(entry.name):
                try:
                    self.records[entry.name] = self._load(entry)
                except (FileNotFoundError, ValueError) as e:
                    # Only a never-started container's record is written without fsync (see
                    # create), so only such a one can be torn by a power loss: it is dropped.
                    # A bundle the shim ever ran in is never deleted on a guess.
                    if (entry / "shim.pid").exists():
                        raise RuntimeFault(f"{entry / 'config.json'} is unreadable ({e}): "
                                           "repair or remove that container's directory") from None
                    remove_tree(entry)

    def _load(self, bundle: Path) -> dict[str, Any]:
        """The newest record: the journal's last complete line, else config.json."""
        try:
            lines = (bundle / JOURNAL).read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        self._lines[bundle.name] = len(lines)
        for line in reversed(lines):
            try:
                return json.loads(line)
            except ValueError:
                continue  # torn by a power loss: the line before holds
        return read_json(bundle / "config.json")

    def bundle(self, cid: str) -> Path:
        return self.dir / cid

    def create(self, record: dict[str, Any]) -> Path:
        """Publish a new bundle atomically: everything is made in a temp dir, then renamed.

        Nothing is fsynced: the rename is atomic for every reader and survives a kill -9, and a
        container that never started needs no durable state. The first `save(durable=True)` (the
        start) makes the record durable; a power loss before that may drop the container.
        """
        tmp = self.dir / f".tmp-{record['id']}"
        tmp.mkdir()
        try:
            for d in BUNDLE_DIRS:
                (tmp / d).mkdir()
            atomic_write_json(tmp / "config.json", record, durable=False)
            os.rename(tmp, self.bundle(record["id"]))
        except BaseException:
            remove_tree(tmp)
            raise
        self.records[record["id"]] = record
        return self.bundle(record["id"])

    def save(self, record: dict[str, Any], durable: bool = True) -> None:
        """Replace the record on disk; `durable=False` only for a container that is not running."""
        self.write(record["id"], self.encode(record), durable)
        self.records[record["id"]] = record

    @staticmethod
    def encode(record: dict[str, Any]) -> bytes:
        """The record as `save` writes it: taken under the runtime's lock, so that the (durable,
        slow) `write` can happen outside it while nobody else may change that container."""
        return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()  # compact: C encoder (fsutil)

    def write(self, cid: str, data: bytes, durable: bool = True) -> None:
        """Append what `encode` returned to the container's journal (see `save` and the module doc)."""
        bundle = self.bundle(cid)
        if self._lines.get(cid, 0) >= COMPACT_AFTER:
            atomic_write_bytes(bundle / "config.json", data, durable=durable)
            (bundle / JOURNAL).unlink(missing_ok=True)  # a crash before this leaves the same record in both
            self._lines[cid] = 0
            return
        fd = os.open(bundle / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            line = memoryview(data + b"\n")
            while line:  # a regular file takes it whole unless the disk is full (which raises)
                line = line[os.write(fd, line):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        self._lines[cid] = self._lines.get(cid, 0) + 1

    def delete(self, cid: str) -> None:
        """The bundle is renamed away at once; its files are deleted by the reaper thread."""
        trash = to_trash(self.bundle(cid))
        self.records.pop(cid, None)
        self._lines.pop(cid, None)
        if trash is not None:
            self.reaper.delete(trash)

    def sweep(self) -> None:
        sweep_temps(self.dir)
