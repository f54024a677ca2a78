"""The container runtime library: the one entry point the agent (and tests) use.

`Runtime` ties together the image store, volumes, the cgroups driver and the shim. It is
synchronous and thread-safe (one re-entrant lock around every state change; long waits such
as a stop's grace period happen outside it). Nothing here knows about gRPC.

Status is derived, never stored: a container whose record has a shim pid is "running" while
that shim (identified by pid *and* start time) lives, "paused" when its freezer is frozen,
"exited" once the shim's exit file exists, "dead" if the shim vanished without one ("created"
while a start is under way and "removing" during a removal, the two steps that run partly
outside the lock so that many containers start or go at once). The first
query that sees an exit "finalizes" it: exit code and time from the exit file, OOM from the
cgroup, then the cgroup is removed. That works the same after an agent crash.
"""
from __future__ import annotations

import errno
import io
import json
import os
import secrets
import shlex
import signal as _signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from . import archive, kernel, rootfs, shim
from .cgroups import DEFAULT_ROOT, Cgroup, CgroupDriver, Resources
from .clock import ZERO_TIME, now, parse_rfc3339, rfc3339
from .containers import ContainerInfo, ContainerStore, command_string, new_state, resolve_process
from .etcfiles import write_etc_files
from .errors import Conflict, InvalidArgument, NotFound, RuntimeFault, StartFailed, Timeout
from .images import ImageInfo, ImageStore, apply_changes, chain_ids
from .imaging.auth import CredentialStore
from .imaging.sandbox import BuildSandbox
from .imaging.service import ImageService
from .imaging.tlsconfig import DEFAULT_CERTS_DIR
from .logs import LogEntry, read_log
from .names import random_name
from .netwiring import NEW_NETNS, NetWiring, configured
from .procs import process_rows
from .reference import parse_reference
from .spec import ContainerSpec, ExecSpec, check_env, merge_env, parse_signal, validate_spec
from .volumes import VolumeInfo, VolumeStore

KILL_WAIT = 10.0  # how long a SIGKILLed container may take to disappear before it is an error


def _acts_after_reboot(spec: dict[str, Any]) -> bool:
    """Whether a container's start must survive a power loss (be fsynced before `start` returns).

    A power loss kills every container; after the reboot a start record that was lost makes the
    container read "created" instead of "exited". Only a restart policy (restart it) or `--rm`
    (remove it) act on that difference; for any other container it is the same dead container,
    so its start skips the fsync (~1.5-4 ms on this ext4, on the start's critical path).
    """
    return spec["restart_policy"]["name"] != "no" or spec["auto_remove"]


class Runtime:
    """A local container runtime rooted at `root` with its own cgroup parent."""

    def __init__(self, root: Path, cgroup_parent: str = "flotilla", shim_path: Path | None = None,
                 cgroup_root: Path = DEFAULT_ROOT, default_subnet: str = "10.88.0.0/16",
                 network_options: dict[str, Any] | None = None) -> None:
        if shim_path is not None and Path(shim_path).resolve() != shim.SHIM_PATH:
            raise InvalidArgument(f"shim_path {shim_path}: only the built shim {shim.SHIM_PATH} is supported")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._images = ImageStore(self.root)
        self._volumes = VolumeStore(self.root)
        self._store = ContainerStore(self.root)
        self.cgroups = CgroupDriver(cgroup_parent, cgroup_root)
        self.tmpmounts = self.root / "tmpmounts"
        self.tmpmounts.mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._busy: dict[str, int] = {}  # containers with a temporary rootfs mount (copy, export)
        self._starting: set[str] = set()  # containers whose shim is setting up, outside the lock (start)
        self._removing: set[str] = set()  # containers whose cgroup and network go, outside the lock (remove)
        self.net = NetWiring(self.root, cgroup_parent, default_subnet, network_options)  # netwiring.py

    # ================================================================ recovery
    def recover(self) -> list[str]:
        """After a (crash-)restart: clean temp state, finalize exited containers, return running ids."""
        with self._lock:
            rootfs.clean_temporary_mounts(self.tmpmounts)
            self._images.sweep()
            self._volumes.sweep()
            self._store.sweep()
            running = []
            for record in self._store.records.values():
                self._adopt_unrecorded_start(record)  # only a crash can leave one: nothing else looks
            for cid in list(self._store.records):
                if self._status(cid) in ("running", "paused"):
                    running.append(cid)
                elif self._cgroup(cid).exists():
                    self._cgroup(cid).destroy()  # finalized just before a crash
            self.net.recover(running)
            return running

    def drain(self) -> None:
        """Wait until the files of removed containers are deleted (they go on a thread of their own)."""
        self._store.reaper.drain()

    def close(self) -> None:
        """Stop the network's DNS thread and close its handles; containers and kernel state stay."""
        self.net.close()
        self.cgroups.close()

    def close_cgroup_parent(self) -> None:
        """Remove this runtime's cgroup parent (when the agent shuts down for good, and in tests)."""
        self.cgroups.remove_parent()

    # ================================================================ images
    def import_image(self, tar: BinaryIO | Path, reference: str, changes: dict | None = None) -> ImageInfo:
        return self._images.import_image(tar, reference, changes)

    def images(self) -> list[ImageInfo]:
        return self._images.list()

    def image(self, ref: str) -> ImageInfo:
        return self._images.image(ref)

    def tag_image(self, source: str, target: str) -> None:
        self._images.tag(source, target)

    def remove_image(self, ref: str, force: bool = False) -> list[str]:
        with self._lock:
            return self._images.remove(ref, force, self._image_users)

    def image_service(self, insecure_registries: list[str] | None = None, credentials: CredentialStore | None = None,
                      certs_dir: Path = DEFAULT_CERTS_DIR) -> ImageService:
        """Pull/push/save/load/build (issue 3) over this runtime's image store, container table and
        cgroups: prune keeps images that containers use, RUN steps get a netns and a cgroup here."""
        return ImageService(self._images, credentials, insecure_registries, users=self._image_users,
                            certs_dir=certs_dir, sandbox=BuildSandbox(self.cgroups, self.net.nm), users_lock=self._lock)

    def _image_users(self, image_id: str) -> list[str]:
        return [cid[:12] for cid, r in self._store.records.items() if r["image_id"] == image_id]

    # ================================================================ volumes
    def create_volume(self, name: str = "", labels: dict | None = None) -> VolumeInfo:
        return self._volumes.create(name, labels)

    def volumes(self) -> list[VolumeInfo]:
        return self._volumes.list()

    def volume(self, name: str) -> VolumeInfo:
        return self._volumes.get(name)

    def remove_volume(self, name: str, force: bool = False) -> None:
        with self._lock:
            self._volumes.get(name)
            users = [cid[:12] for cid, r in self._store.records.items()
                     if any(m.get("name") == name for m in r["mounts"])]
            if users and not force:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            self._volumes.remove(name)

    # ================================================================ lookups
    def _find(self, ref: str) -> str:
        """Container id for a full id, a name (with or without '/'), or a unique id prefix."""
        records = self._store.records
        if ref in records:
            return ref
        name = ref.lstrip("/")
        for cid, r in records.items():
            if r["name"] == name:
                return cid
        if ref and all(c in "0123456789abcdef" for c in ref):
            matches = [cid for cid in records if cid.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise Conflict(f"multiple containers match id prefix {ref!r}: give more characters")
        raise NotFound(f"no such container: {ref}")

    def _cgroup(self, cid: str) -> Cgroup:
        return self.cgroups.cgroup(cid)

    def _shim_pidfd(self, cid: str) -> int | None:
        st = self._store.records[cid]["state"]
        return kernel.open_pidfd(st["shim_pid"], st["shim_start"]) if st["shim_pid"] else None

    def _shim_alive(self, cid: str) -> bool:
        fd = self._shim_pidfd(cid)
        if fd is None:
            return False
        os.close(fd)
        return True

    def _status(self, cid: str, finalize: bool = True) -> str:
        """Derive the status from files, finalizing an exit the first time it is seen (unless
        the caller is about to delete the container anyway: `finalize=False`)."""
        with self._lock:
            if cid in self._starting:
                return "created"  # until start() has recorded the shim (or the failure)
            if cid in self._removing:
                return "removing"  # Docker's word; the record goes once cgroup and network are gone
            record = self._store.records[cid]
            st = record["state"]
            if self._shim_alive(cid):
                return "paused" if self._cgroup(cid).frozen() else "running"
            if not st["shim_pid"]:
                return "created"
            exit_path = self._store.bundle(cid) / "exit"
            if not st["finalized"] and finalize:
                self._finalize(record, exit_path)
            return "exited" if exit_path.exists() else "dead"

    def _adopt_unrecorded_start(self, record: dict[str, Any]) -> bool:
        """Pick up a start whose pids were never saved (a crash right after the shim started);
        `recover()` asks for every container, since in a running runtime `start` records every
        shim it spawns before anyone can see the container as started.

        The shim writes `shim.pid` and `init.pid` into the bundle; if they name another shim than
        the record does, that start happened. The shim is recognised by its command line (the
        `run` of this bundle), so a recycled pid is never adopted. Returns whether it adopted.
        """
        bundle = self._store.bundle(record["id"])
        st = record["state"]
        try:
            shim_pid = int((bundle / "shim.pid").read_text())
        except (FileNotFoundError, ValueError):
            return False
        if shim_pid == st["shim_pid"]:
            return False
        try:
            with open(f"/proc/{shim_pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            alive = len(argv) > 2 and argv[1] == b"run" and argv[2] == os.fsencode(bundle)
        except (FileNotFoundError, ProcessLookupError):
            alive = False
        if not alive and not (bundle / "exit").exists():
            return False
        try:
            pid = int((bundle / "init.pid").read_text())
        except (FileNotFoundError, ValueError):
            pid = 0
        st.update({"shim_pid": shim_pid, "shim_start": (kernel.start_time(shim_pid) or -1) if alive else -1,
                   "pid": pid, "pid_start": (kernel.start_time(pid) or -1) if alive and pid else -1,
                   "started_at": os.stat(bundle / "shim.pid").st_mtime, "finished_at": 0.0, "exit_code": 0,
                   "oom_killed": False, "error": "", "finalized": False})
        self._store.save(record)
        return True

    def _finalize(self, record: dict[str, Any], exit_path: Path) -> None:
        """Record exit code, time and OOM once the shim is gone; remove the cgroup."""
        st = record["state"]
        try:
            status = shim.read_exit(exit_path)
            st["exit_code"] = status.code
            st["finished_at"] = parse_rfc3339(status.finished)
        except (FileNotFoundError, ValueError):
            st["exit_code"] = 255
            st["finished_at"] = now()
            st["error"] = "the container's shim died without recording an exit status"
        cg = self._cgroup(record["id"])
        if cg.exists():
            st["oom_killed"] = cg.oom_kills() > 0
        st["finalized"] = True
        self.net.release(record["id"])  # Docker keeps addresses and ports only while running
        # Before the cgroup (and its OOM counter) is gone; recover() removes it after a crash. Not
        # fsynced: a power loss that could lose it also lost the shim's (unsynced) exit file and
        # killed every container, so the durable start record reads as "dead" after the reboot.
        self._store.save(record, durable=False)
        if cg.exists():
            cg.destroy()

    def _info(self, cid: str) -> ContainerInfo:
        status = self._status(cid)
        r = self._store.records[cid]
        st = r["state"]
        running = status in ("running", "paused")
        return ContainerInfo(
            id=cid, name=r["name"], image=r["image"], image_id=r["image_id"],
            command=command_string(r["process"]["args"]), created=r["created"], status=status,
            exit_code=0 if running else st["exit_code"], pid=st["pid"] if running else 0,
            started_at=st["started_at"], finished_at=0.0 if running else st["finished_at"],
            restart_count=st["restart_count"], spec=ContainerSpec.from_dict(r["spec"]),
            ports=self.net.nm.ports(cid) if running else [],
        )

    def list(self, all: bool = False) -> list[ContainerInfo]:  # noqa: A002 (Docker's flag name)
        with self._lock:
            infos = [self._info(cid) for cid in list(self._store.records)]
        infos = [i for i in infos if all or i.status in ("running", "paused")]
        return sorted(infos, key=lambda i: i.created, reverse=True)

    def resolve(self, ref: str) -> str:
        """The full id of a container given by id, name or unique id prefix (NotFound otherwise)."""
        with self._lock:
            return self._find(ref)

    def status(self, ref: str) -> tuple[str, str]:
        """(full id, status): what `get` says of it, without building the whole ContainerInfo."""
        with self._lock:
            cid = self._find(ref)
            return cid, self._status(cid)

    def get(self, ref: str) -> ContainerInfo:
        with self._lock:
            return self._info(self._find(ref))

    # ================================================================ create
    def create(self, spec: ContainerSpec) -> ContainerInfo:
        """Validate everything, then publish the bundle; on any error nothing is left behind."""
        validate_spec(spec)
        with self._lock:
            image_id = self._images.resolve(spec.image)
            name = spec.name
            if name:
                taken = [cid for cid, r in self._store.records.items() if r["name"] == name]
                if taken:
                    raise Conflict(f'the container name "/{name}" is already in use by container "{taken[0]}"; '
                                   "remove (or rename) that container to be able to reuse that name")
            else:
                names = {r["name"] for r in self._store.records.values()}
                name = random_name()
                while name in names:
                    name = f"{random_name()}{secrets.randbelow(10)}"
            cid = secrets.token_hex(32)
            process = resolve_process(spec, self._images.oci_config(image_id).get("config") or {}, cid)
            for m in spec.mounts:
                if m.is_bind and not os.path.exists(m.source):
                    raise InvalidArgument(f"invalid mount config: bind source path does not exist: {m.source}")
            lowerdirs = self._images.lower_dirs(image_id)
            networks = self.net.configure(spec)
            made: list[str] = []
            try:
                mounts = []
                for m in spec.mounts:
                    if m.is_bind:
                        mounts.append({"type": "bind", "name": "", "source": os.path.normpath(m.source),
                                       "destination": m.destination, "readonly": m.readonly})
                        continue
                    try:
                        vol = self._volumes.get(m.source) if m.source else None
                    except NotFound:
                        vol = None
                    if vol is None:
                        vol = self._volumes.create(m.source, anonymous=not m.source)
                        made.append(vol.name)
                    mounts.append({"type": "volume", "name": vol.name, "source": vol.mountpoint,
                                   "destination": m.destination, "readonly": m.readonly})
                record = {
                    "id": cid, "name": name, "created": now(), "image": spec.image, "image_id": image_id,
                    "spec": {**spec.to_dict(), "name": name}, "process": process, "lowerdirs": lowerdirs,
                    "mounts": mounts, "state": new_state(), "networks": networks,
                }
                self._store.create(record)
            except BaseException:
                for vol_name in made:
                    self._volumes.remove(vol_name)
                raise
            return self._info(cid)

    # ================================================================ start / attach / wait
    def _shim_config(self, record: dict[str, Any], attach: bool, netns: str) -> shim.ShimConfig:
        """`netns`: the namespace set up by the network ("" for host networking, NEW_NETNS: the shim makes one)."""
        bundle = self._store.bundle(record["id"])
        spec = record["spec"]
        proc = record["process"]
        namespaces = [ns for ns in shim.ALL_NAMESPACES if ns != "net" or netns == NEW_NETNS]
        etc_binds = write_etc_files(bundle, proc["hostname"], spec["network_mode"],
                                    {os.path.normpath(m["destination"]) for m in record["mounts"]},
                                    self.net.files(record))
        return shim.ShimConfig(
            args=proc["args"], env=proc["env"], cwd=proc["cwd"], user=proc["user"] or None,
            hostname=proc["hostname"], lowerdir=record["lowerdirs"], upperdir=str(bundle / "upper"),
            workdir=str(bundle / "work"), rootfs=str(bundle / "rootfs"), readonly=spec["readonly_rootfs"],
            namespaces=namespaces, netns=None if netns in ("", NEW_NETNS) else netns, cgroups=[str(p) for p in self._cgroup(record["id"]).paths()],
            mounts=[*(shim.BindMount(src, dst) for src, dst in etc_binds),
                    *(shim.BindMount(m["source"], m["destination"], m["readonly"]) for m in record["mounts"])],
            tty=spec["tty"], stdin=spec["stdin_open"], wait_attach=attach, init=spec.get("init", False),
            log=str(bundle / f"{record['id']}-json.log"),
        )

    def start(self, ref: str, attach: bool = False) -> socket.socket | None:
        """Start the process; with `attach`, it runs only once the returned socket is connected.

        The runtime's lock is not held while the shim sets the container up (its namespaces,
        mounts, cgroup join and execve, most of a start's time, much of it waiting on the
        kernel): the container is marked *starting* meanwhile, which makes `start` and `remove`
        of it refuse and its status read as "created", so other containers start in parallel.
        """
        with self._lock:
            cid = self._find(ref)
            if self._status(cid) in ("running", "paused"):
                return self.attach(cid) if attach else None
            if self._busy.get(cid) or cid in self._starting or cid in self._removing:
                raise Conflict(f"container {ref} is busy (starting, removing, or a copy or export is in progress): "
                               "try again")
            record = self._store.records[cid]
            bundle = self._store.bundle(cid)
            for leftover in ("exit", "attach.sock", "init.pid", "shim.pid"):
                (bundle / leftover).unlink(missing_ok=True)
            for f in (bundle / "exec").iterdir():
                f.unlink()
            for m in record["mounts"]:
                if m["type"] == "volume":
                    self._volumes.create(m["name"])  # recreated if it was force-removed meanwhile
            spec = record["spec"]
            cg = self._cgroup(cid)
            if cg.exists():
                cg.destroy()
            cg.create(Resources(memory=spec["memory"], cpus=spec["cpus"], cpu_shares=spec["cpu_shares"],
                                pids_limit=spec["pids_limit"]))
            st = record["state"]
            try:
                netns = self.net.setup(record, (self._images.oci_config(record["image_id"]).get("config") or {}).get("ExposedPorts"))
            except RuntimeFault as e:
                cg.destroy()
                st.update(new_state() | {"restart_count": st["restart_count"], "exit_code": 125, "error": str(e)})
                self._store.save(record)
                raise StartFailed(str(e), 125) from None
            self._starting.add(cid)
            started = now()  # before the process runs: a short one may be done when run() returns

            def record_start(pid: int, shim_pid: int) -> None:
                """Saved durably while the container sets itself up (the shim's `started` report).

                Encoded under the lock, written outside it: the container is still "starting",
                so nobody else writes its record meanwhile.
                """
                with self._lock:
                    st.update({
                        "pid": pid, "pid_start": kernel.start_time(pid) or -1,
                        "shim_pid": shim_pid, "shim_start": kernel.start_time(shim_pid) or -1,
                        "started_at": started, "finished_at": 0.0, "exit_code": 0, "oom_killed": False, "error": "",
                        "finalized": False,
                    })
                    encoded = self._store.encode(record)
                self._store.write(cid, encoded, durable=_acts_after_reboot(spec))

        try:
            try:
                self._shim_config(record, attach, netns).write(bundle / "shim.conf")
                proc = shim.run(bundle, wait_attach=attach, on_started=record_start)
            except (shim.ShimError, ValueError, OSError) as e:
                with self._lock:
                    cg.destroy()
                    self.net.release(cid)
                    for leftover in ("exit", "init.pid", "shim.pid"):
                        (bundle / leftover).unlink(missing_ok=True)
                    code = e.exit_code if isinstance(e, shim.ShimError) else 125
                    st.update(new_state() | {"restart_count": st["restart_count"], "exit_code": code, "error": str(e)})
                    self._store.save(record)
                raise StartFailed(str(e), code) from None
            return proc.attach
        finally:
            with self._lock:
                self._starting.discard(cid)

    def attach(self, ref: str) -> socket.socket:
        with self._lock:
            cid = self._find(ref)
            if self._status(cid) not in ("running", "paused"):
                raise Conflict(f"you cannot attach to a stopped container {ref}: start it first")
            return shim.connect_attach(self._store.bundle(cid) / "attach.sock")

    def shim_pidfd(self, ref: str) -> int | None:
        """A pidfd readable once the container's shim has exited (None if it is not running).

        The caller owns (and must close) the descriptor.
        """
        with self._lock:
            return self._shim_pidfd(self._find(ref))

    def wait(self, ref: str, timeout: float | None = None) -> int:
        """Block until the container is no longer running; its exit code."""
        with self._lock:
            cid = self._find(ref)
            fd = self._shim_pidfd(cid)
        if fd is not None:
            try:
                if not kernel.exited(fd, timeout):
                    raise Timeout(f"container {ref} is still running after {timeout}s")
            finally:
                os.close(fd)
        with self._lock:
            return self._info(cid).exit_code

    # ================================================================ signals
    def _signal_init(self, cid: str, sig: int) -> bool:
        """Send `sig` to the container's init; False only when the kernel dropped it (it neither
        caught nor blocked it before and after the send: see `kernel.takes_signal`)."""
        st = self._store.records[cid]["state"]
        fd = kernel.open_pidfd(st["pid"], st["pid_start"])
        if fd is None:
            return True  # already gone: the shim is about to report the exit
        try:
            before = kernel.takes_signal(st["pid"], sig)
            _signal.pidfd_send_signal(fd, sig)
            return before or kernel.takes_signal(st["pid"], sig)
        except ProcessLookupError:
            return True
        finally:
            os.close(fd)

    def _wait_shim(self, cid: str, timeout: float) -> bool:
        fd = self._shim_pidfd(cid)
        if fd is None:
            return True
        try:
            return kernel.exited(fd, timeout)
        finally:
            os.close(fd)

    def _force_kill(self, cid: str) -> None:
        """SIGKILL the container (thawing it if paused) and wait for the shim to report the exit."""
        self._signal_init(cid, _signal.SIGKILL)
        cg = self._cgroup(cid)
        if cg.frozen():
            cg.thaw()
        if not self._wait_shim(cid, KILL_WAIT):
            cg.destroy()  # kills by cgroup whatever survived the pid namespace's init
            if not self._wait_shim(cid, KILL_WAIT):
                raise RuntimeFault(f"container {cid[:12]} did not die after SIGKILL")

    def stop(self, ref: str, timeout: int | None = None) -> None:
        """Stop signal, up to `timeout` (default: the spec's stop_timeout) seconds, then SIGKILL.

        The grace period is skipped when the kernel dropped the stop signal (a pid-1 process
        without a handler for it, such as busybox `sleep`): nothing could end the wait but the
        time, and SIGKILL follows either way.
        """
        with self._lock:
            cid = self._find(ref)
            if self._status(cid) not in ("running", "paused"):
                return
            record = self._store.records[cid]
            grace = record["spec"]["stop_timeout"] if timeout is None else timeout
            if not self._signal_init(cid, parse_signal(record["process"]["stop_signal"])):
                grace = 0
            cg = self._cgroup(cid)
            if cg.frozen():
                cg.thaw()  # the signal is pending; it is delivered once thawed
        if not self._wait_shim(cid, max(0, grace)):
            with self._lock:
                self._force_kill(cid)
        self._status(cid)

    def kill(self, ref: str, signal: str = "KILL") -> bool:  # noqa: A002 (the API's name)
        """Send a signal to the container's init; False when the kernel dropped it (see stop)."""
        sig = parse_signal(signal)
        with self._lock:
            cid = self._find(ref)
            status = self._status(cid)
            if status not in ("running", "paused"):
                raise Conflict(f"cannot kill container {ref}: container is not running")
            reached = self._signal_init(cid, sig)
            if sig == _signal.SIGKILL and status == "paused":
                self._cgroup(cid).thaw()
            return reached

    def restart(self, ref: str, timeout: int | None = None) -> None:
        self.stop(ref, timeout)
        self.start(ref)

    def pause(self, ref: str) -> None:
        with self._lock:
            cid = self._find(ref)
            status = self._status(cid)
            if status == "paused":
                raise Conflict(f"container {ref} is already paused")
            if status != "running":
                raise Conflict(f"container {ref} is not running")
            self._cgroup(cid).freeze()

    def unpause(self, ref: str) -> None:
        with self._lock:
            cid = self._find(ref)
            if self._status(cid) != "paused":
                raise Conflict(f"container {ref} is not paused")
            self._cgroup(cid).thaw()

    def record_restart(self, ref: str) -> None:
        with self._lock:
            record = self._store.records[self._find(ref)]
            record["state"]["restart_count"] += 1
            self._store.save(record)

    # ================================================================ remove
    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        """Delete the container; `force` kills a running one; `volumes` also deletes its anonymous volumes."""
        with self._lock:
            cid = self._find(ref)
            if self._busy.get(cid) or cid in self._starting or cid in self._removing:
                raise Conflict(f"container {ref} is busy (starting, removing, or a copy or export is in progress): "
                               "try again")
            if self._status(cid, finalize=False) in ("running", "paused"):
                if not force:
                    raise Conflict(f"cannot remove container {ref}: container is running: "
                                   "stop the container before removing or force remove")
                self._force_kill(cid)
            record = self._store.records[cid]
            self._removing.add(cid)
        try:
            # The cgroup and the network go outside the lock (rmdirs and netns unlinks wait on
            # the kernel; the network manager has a lock of its own), so that hundreds of
            # removals overlap. The record stays until both are gone: a crash in between
            # leaves a container that recover() and a new remove() clean up.
            cg = self._cgroup(cid)
            if cg.exists():
                cg.destroy()
            self.net.release(cid)
            with self._lock:
                self._store.delete(cid)
                if volumes:
                    for m in record["mounts"]:
                        if m["type"] == "volume" and self._is_anonymous(m["name"]) and not self._volume_used(m["name"]):
                            self._volumes.remove(m["name"])
        finally:
            with self._lock:
                self._removing.discard(cid)

    def _is_anonymous(self, name: str) -> bool:
        try:
            return self._volumes.get(name).anonymous
        except NotFound:
            return False

    def _volume_used(self, name: str) -> bool:
        return any(m.get("name") == name for r in self._store.records.values() for m in r["mounts"])

    # ================================================================ inspect / logs / top / stats
    def inspect(self, ref: str) -> dict:
        with self._lock:
            cid = self._find(ref)
            info = self._info(cid)
            r = self._store.records[cid]
        st, spec, proc = r["state"], r["spec"], r["process"]
        bundle = self._store.bundle(cid)
        running = info.status in ("running", "paused")
        return {
            "Id": cid, "Created": rfc3339(r["created"]), "Path": proc["args"][0], "Args": proc["args"][1:],
            "State": {
                "Status": info.status, "Running": running, "Paused": info.status == "paused",
                "Restarting": False, "OOMKilled": bool(st["oom_killed"]) and not running,
                "Dead": info.status == "dead", "Pid": info.pid, "ExitCode": info.exit_code, "Error": st["error"],
                "StartedAt": rfc3339(st["started_at"]),
                "FinishedAt": ZERO_TIME if running else rfc3339(st["finished_at"]),
            },
            "Image": r["image_id"], "Name": "/" + r["name"], "RestartCount": st["restart_count"],
            "Driver": "overlay", "Platform": "linux", "LogPath": str(bundle / f"{cid}-json.log"),
            "HostConfig": {
                "Binds": [f"{m['name'] or m['source']}:{m['destination']}{':ro' if m['readonly'] else ''}"
                          for m in r["mounts"]],
                "NetworkMode": spec["network_mode"],
                "RestartPolicy": {"Name": spec["restart_policy"]["name"],
                                  "MaximumRetryCount": spec["restart_policy"]["max_retries"]},
                "AutoRemove": spec["auto_remove"], "ReadonlyRootfs": spec["readonly_rootfs"], "Init": spec.get("init", False),
                "Memory": spec["memory"], "NanoCpus": int(round(spec["cpus"] * 1e9)), "CpuShares": spec["cpu_shares"],
                "PidsLimit": spec["pids_limit"], "CgroupParent": self.cgroups.parent,
            },
            "Mounts": [{"Type": m["type"], "Name": m["name"], "Source": m["source"], "Destination": m["destination"],
                        "Mode": "ro" if m["readonly"] else "", "RW": not m["readonly"]} for m in r["mounts"]],
            "Config": {
                "Hostname": proc["hostname"], "User": proc["user"], "Tty": spec["tty"], "OpenStdin": spec["stdin_open"],
                "Env": proc["env"], "Cmd": proc["cmd"], "Entrypoint": proc["entrypoint"] or None, "Image": r["image"],
                "WorkingDir": proc["cwd"], "Labels": spec["labels"], "StopSignal": proc["stop_signal"],
                "StopTimeout": spec["stop_timeout"],
            },
            "NetworkSettings": self.net.settings(r, running),
            "GraphDriver": {"Name": "overlay", "Data": {
                "LowerDir": ":".join(r["lowerdirs"]), "UpperDir": str(bundle / "upper"),
                "WorkDir": str(bundle / "work"), "MergedDir": str(bundle / "rootfs")}},
        }

    def logs(self, ref: str, follow: bool = False, tail: int | None = None, since: float = 0) -> Iterator[LogEntry]:
        """The json-file log; `follow` keeps reading until the container has stopped."""
        with self._lock:
            cid = self._find(ref)
            fd = self._shim_pidfd(cid)
        path = self._store.bundle(cid) / f"{cid}-json.log"

        def gen() -> Iterator[LogEntry]:
            try:
                yield from read_log(path, follow=follow, tail=tail, since=since,
                                    stopped=lambda: fd is None or kernel.exited(fd))
            finally:
                if fd is not None:
                    os.close(fd)
        return gen()

    def top(self, ref: str) -> list[dict]:
        """PID, USER, TIME, CMD of every process in the container's cgroup (read from /proc)."""
        with self._lock:
            cid = self._find(ref)
            if self._status(cid) not in ("running", "paused"):
                raise Conflict(f"container {ref} is not running")
            pids = self._cgroup(cid).pids()
        return process_rows(pids)

    def stats(self, ref: str) -> dict:
        """CPU, memory and pids counters of the container's cgroup (zeros once it stopped)."""
        with self._lock:
            cid = self._find(ref)
            running = self._status(cid) in ("running", "paused")
            values = self._cgroup(cid).stats() if running else dict.fromkeys(
                ("cpu_usage_ns", "cpu_user_ns", "cpu_system_ns", "memory_usage", "memory_limit",
                 "pids_current", "pids_limit"), 0)
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/meminfo") as f:
            total_kb = int(f.readline().split()[1])
        values["system_cpu_usage_ns"] = sum(cpu) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        values["online_cpus"] = os.cpu_count() or 1
        if not values["memory_limit"]:
            values["memory_limit"] = total_kb * 1024  # unlimited: the host's memory, as Docker shows
        values["read"] = rfc3339(now())
        return values

    # ================================================================ exec
    def exec(self, ref: str, spec: ExecSpec) -> tuple[str, socket.socket]:  # noqa: A003
        """Run a process inside the running container; returns the exec id and its attach socket."""
        if not spec.cmd:
            raise InvalidArgument("no command specified for exec")
        check_env(spec.env)
        if spec.workdir and not spec.workdir.startswith("/"):
            raise InvalidArgument(f"the working directory {spec.workdir!r} is invalid, it needs to be an absolute path")
        with self._lock:
            cid = self._find(ref)
            status = self._status(cid)
            if status == "paused":
                raise Conflict(f"container {ref} is paused, unpause the container before exec")
            if status != "running":
                raise Conflict(f"container {ref} is not running")
            record = self._store.records[cid]
            proc = record["process"]
            exec_id = secrets.token_hex(32)
            bundle = self._store.bundle(cid)
            self._prune_execs(bundle / "exec")
            cfg = shim.ShimConfig(
                args=list(spec.cmd), env=merge_env(proc["env"], spec.env), cwd=spec.workdir or proc["cwd"],
                user=(spec.user or proc["user"]) or None, namespaces=[], masked=[], readonly_paths=[],
                cgroups=[str(p) for p in self._cgroup(cid).paths()], tty=spec.tty, stdin=spec.stdin_open,
                wait_attach=True, pid=record["state"]["pid"],
            )
            try:
                cfg.write(bundle / "exec" / f"{exec_id}.conf")
                started = shim.exec(bundle, exec_id, wait_attach=True)
            except (shim.ShimError, ValueError, OSError) as e:
                raise StartFailed(str(e), getattr(e, "exit_code", 125)) from None
            assert started.attach is not None
            return exec_id, started.attach

    @staticmethod
    def _prune_execs(exec_dir: Path) -> None:
        """Drop the files of finished execs (their exit code went out as an exit frame), so that
        frequent execs (health checks) do not pile up files in a long-running container's bundle."""
        for exit_file in exec_dir.glob("*.exit"):
            for suffix in (".conf", ".sock", ".exit"):
                exit_file.with_suffix(suffix).unlink(missing_ok=True)

    # ================================================================ files
    @contextmanager
    def _rootfs(self, cid: str, live_ok: bool) -> Iterator[tuple[int, set[str]]]:
        """A directory fd of the container's root filesystem and the mount points not to descend into.

        `live_ok` (copy) means the container's view with its volumes and binds; without it (export)
        only the root filesystem. Running: /proc/<pid>/root (without `live_ok` every mount but the
        root is skipped). Stopped: the overlay (and with `live_ok` the volumes) mounted for the
        duration under `<root>/tmpmounts/`. The runtime lock is not held while the caller works.
        """
        with self._lock:
            record = self._store.records[cid]
            st = record["state"]
            live = self._status(cid) in ("running", "paused")
            root_fd = rootfs.open_live_root(cid, st["pid"], st["pid_start"]) if live else None
            if not live:
                self._busy[cid] = self._busy.get(cid, 0) + 1
        if root_fd is not None:
            try:
                yield root_fd, (set() if live_ok else rootfs.container_mountpoints(st["pid"]))
            finally:
                os.close(root_fd)
            return
        bundle = self._store.bundle(cid)
        try:
            binds = [(m["source"], m["destination"], m["readonly"]) for m in record["mounts"]] if live_ok else []
            with rootfs.temporary_mount(self.tmpmounts, cid, record["lowerdirs"], bundle / "upper", bundle / "work",
                                        binds) as fd:
                yield fd, set()
        finally:
            with self._lock:
                self._busy[cid] -= 1
                if not self._busy[cid]:
                    del self._busy[cid]

    def copy_from(self, ref: str, path: str) -> Iterator[bytes]:
        """A tar stream of `path` in the container (top entry named after its last component)."""
        with self._lock:
            cid = self._find(ref)
        parts = archive.split_path(path, "path")

        def gen() -> Iterator[bytes]:
            with self._rootfs(cid, live_ok=True) as (root_fd, _):
                if not parts:
                    yield from archive.tar_tree(root_fd)
                    return
                parent = self._open_dir_in(root_fd, "/" + "/".join(parts[:-1]), ref, path)
                try:
                    try:
                        os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                    except FileNotFoundError:
                        raise NotFound(f"could not find the file {path} in container {ref}") from None
                    yield from archive.tar_path(parent, parts[-1], parts[-1])
                finally:
                    os.close(parent)
        return gen()

    @staticmethod
    def _open_dir_in(root_fd: int, path: str, ref: str, shown: str) -> int:
        try:
            return kernel.open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise NotFound(f"could not find the file {shown} in container {ref}") from None
        except NotADirectoryError:
            raise InvalidArgument(f"{shown} in container {ref} is not a directory") from None

    def copy_to(self, ref: str, path: str, tar: BinaryIO) -> None:
        """Unpack a tar stream into the directory `path` of the container (like `docker cp - CTR:path`)."""
        with self._lock:
            cid = self._find(ref)
        with self._rootfs(cid, live_ok=True) as (root_fd, _):
            dest = self._open_dir_in(root_fd, path, ref, path)
            try:
                archive.extract(tar, dest, whiteouts=False)
            except OSError as e:
                if e.errno == errno.EROFS:
                    raise Conflict(f"cannot copy to {path} in container {ref}: it is mounted read-only") from None
                raise
            finally:
                os.close(dest)

    def export(self, ref: str) -> Iterator[bytes]:
        """A tar of the container's merged root filesystem (without volumes, /proc, /sys, /dev)."""
        with self._lock:
            cid = self._find(ref)

        def gen() -> Iterator[bytes]:
            with self._rootfs(cid, live_ok=False) as (root_fd, skip):
                yield from archive.TreeWriter(skip=skip).directory(root_fd, "", None)
                yield b"\0" * 1024
        return gen()

    def commit(self, ref: str, reference: str, changes: dict | None = None) -> ImageInfo:
        """The container's upper dir becomes a new top layer of a new image (paused meanwhile, as Docker)."""
        with self._lock:
            cid = self._find(ref)
            record = self._store.records[cid]
            base = self._images.oci_config(record["image_id"])
            config = apply_changes(base.get("config") or {}, changes)
            tag = str(parse_reference(reference)) if reference else None
            paused_here = False
            if self._status(cid) == "running":
                self._cgroup(cid).freeze()
                paused_here = True
            try:
                upper = os.open(self._store.bundle(cid) / "upper", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    with self._images.lock:
                        diff_id = self._images.content.write_stream(
                            io.BufferedReader(archive.IterReader(archive.tar_tree(upper, whiteouts=True))))
                finally:
                    os.close(upper)
            finally:
                if paused_here:
                    self._cgroup(cid).thaw()
            info = self._images.info(record["image_id"])
            diff_ids = [*info.layers, diff_id]
            manifest_layers = [lay["digest"] for lay in json.loads(self._images.content.read(info.digest))["layers"]]
            created = now()
            history = [*(base.get("history") or []),
                       {"created": rfc3339(created), "created_by": shlex.join(record["process"]["args"])}]
            self._images.ensure_layer(chain_ids(diff_ids)[-1], diff_id, diff_id)
            return self._images.add_image(config=config, diff_ids=diff_ids, layer_blobs=[*manifest_layers, diff_id],
                                          tag=tag, history=history, created=created)

    # ================================================================ networks (the work is in netwiring.py)
    def network_connect(self, network: str, ref: str, ip: str = "", aliases: list[str] | None = None) -> None:
        """`network connect`: wired at once when running, otherwise at the next start."""
        with self._lock:
            cid = self._find(ref)
            record = self._store.records[cid]
            self.net.connect(record, self._status(cid) in ("running", "paused"), network, ip, list(aliases or []),
                             self._store.bundle(cid))
            self._store.save(record)

    def network_disconnect(self, network: str, ref: str) -> None:
        with self._lock:
            cid = self._find(ref)
            record = self._store.records[cid]
            self.net.disconnect(record, self._status(cid) in ("running", "paused"), network, self._store.bundle(cid))
            self._store.save(record)

    def network_users(self, network: str) -> list[str]:
        """Ids of the containers, in any state, configured for a network (wired to it when they
        run). A network with none can be removed without breaking a later start."""
        with self._lock:
            net = self.net.nm.network(network)
            return [cid for cid, record in self._store.records.items()
                    if any(n["network"] in (net.name, net.id) for n in configured(record))]

    def network_inspect(self, ref: str) -> dict:
        with self._lock:
            names = {cid: r["name"] for cid, r in self._store.records.items()}
            none = self.net.nm.network("none")
            isolated = [cid for cid, r in self._store.records.items()
                        if configured(r)[0]["network"] in (none.name, none.id) and self._status(cid) in ("running", "paused")]
        return self.net.network_document(ref, names, isolated)

    def ports(self, ref: str) -> list:
        """The published ports of a running container (`port`): PortMapping with the host port taken."""
        with self._lock:
            cid = self._find(ref)
            if self._status(cid) not in ("running", "paused"):
                return []
            return self.net.nm.ports(cid)
