"""cgroups for containers on v1, v2 and the hybrid layout.

Each Runtime owns one parent cgroup (`cgroup_parent`, e.g. `flotilla`), so several agents or
test runs on one machine never touch each other's cgroups. A container's cgroup is
`<parent>/<container-id>`:

- v1 (and hybrid): one directory in *every* hierarchy mounted under the mount root (memory,
  cpu, cpuacct, pids, freezer, cpuset, devices, blkio, the named systemd hierarchy and, on a
  hybrid host, the cgroup2 `unified` one), as runc does, so the process is fully placed.
- v2: one directory; the parent chain gets the memory/cpu/pids controllers enabled in
  `cgroup.subtree_control` when the root offers them.

The mount root is a parameter so tests also drive the v2 code against a directory laid out
like a cgroup2 mount. Processes are signalled through pidfds, never by a pid that may be stale.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from . import devicefilter
from .errors import InvalidArgument, RuntimeFault

DEFAULT_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000
V2_CONTROLLERS = ("cpu", "memory", "pids")
_PARENT_RE = re.compile(r"^[a-zA-Z0-9_.-]+(/[a-zA-Z0-9_.-]+)*$")
_USER_HZ = os.sysconf("SC_CLK_TCK")
# Docker's default device allowlist. Containers keep CAP_MKNOD, so without it a container could
# create a node for the host's disk and read it: creating nodes stays allowed (`m`), using any
# device beyond these is refused by the devices controller.
DEFAULT_DEVICE_RULES = (
    "c *:* m", "b *:* m",
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",  # null zero full random urandom
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",              # tty console ptmx pts
)


@dataclass
class Resources:
    """The limits a container asks for; 0 means unlimited / kernel default."""

    memory: int = 0
    cpus: float = 0.0
    cpu_shares: int = 0
    pids_limit: int = 0


def shares_to_weight(shares: int) -> int:
    """runc's conversion of cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000)."""
    return 1 + ((shares - 2) * 9999) // 262142


def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str) -> None:
    """One write(2) of `value`: a cgroup file takes each write as one command (a start makes ~20).

    os-level calls instead of `open()`: Python's text file adds an fstat, an ioctl and two lseeks
    to each, and the kernel reports a refused value as the write's errno either way.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)  # as open("w") (test trees)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _kv(path: Path) -> dict[str, int]:
    """Parse `key value` lines (cpu.stat, memory.events, memory.oom_control, ...)."""
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                out[key] = int(value)
    except FileNotFoundError:
        pass
    return out


def _int_or_zero(path: Path, unlimited: int | None = None) -> int:
    """Read an integer file; "max", a v1 'unlimited' huge value, or a missing file give 0."""
    try:
        text = _read(path)
    except (FileNotFoundError, OSError):
        return 0
    if not text.isdigit():
        return 0
    value = int(text)
    return 0 if unlimited is not None and value >= unlimited else value


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    """Signal processes through pidfds; pids that are already gone are skipped."""
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            continue
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)


def _rmdir(path: Path, deadline: float) -> None:
    """rmdir a cgroup, retrying while the kernel still counts exiting tasks (EBUSY)."""
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise RuntimeFault(f"cannot remove cgroup {path}: {e.strerror}") from None
            time.sleep(0.01)


class Cgroup:
    """One container's cgroup: creation, limits, freezer, pids, stats, OOM count, removal."""

    def __init__(self, driver: "CgroupDriver", name: str) -> None:
        self.driver = driver
        self.name = name
        # Computed once: a container's life asks for them ~10 times, and each pathlib join costs
        # more than the stat or write it is for.
        self._paths = tuple(h / driver.parent / name for h in driver.hierarchies.values())
        self._by_hierarchy = dict(zip(driver.hierarchies.values(), self._paths))
        self._strs = tuple(map(str, self._paths))

    # -- layout -------------------------------------------------------------------------
    def paths(self) -> tuple[Path, ...]:
        """The directories the container process joins (one per v1 hierarchy, one on v2)."""
        return self._paths

    def _dir(self, controller: str, what: str) -> Path:
        d = self.driver
        if d.v2:
            if controller not in d.v2_available and controller != "freezer":
                raise InvalidArgument(f"{what} is not supported here: the {controller} controller is not enabled in {d.mount_root}")
            return self._paths[0]
        hier = d.hierarchies.get(controller)
        if hier is None:
            raise InvalidArgument(f"{what} is not supported here: no {controller} cgroup hierarchy under {d.mount_root}")
        return self._by_hierarchy[hier]

    def exists(self) -> bool:
        return any(map(os.path.isdir, self._strs))

    def create(self, resources: Resources) -> None:
        """Create the cgroup everywhere and apply `resources`; on error nothing is left.

        The parent chain is made once per driver (and again if someone removed it meanwhile:
        the child's mkdir then fails with ENOENT); cpuset values are copied only where the
        hierarchy has a cpuset controller. Both keep a start from re-checking ~40 files.
        """
        d = self.driver
        if not d.parent_ready:
            d.ensure_parent()
        made: list[Path] = []
        try:
            for hier, path in self._by_hierarchy.items():
                try:
                    path.mkdir(exist_ok=True)
                except FileNotFoundError:
                    d.ensure_parent()
                    path.mkdir(exist_ok=True)
                made.append(path)
                if d.v2 or hier in d.cpuset_roots:
                    d.inherit_cpuset(path)
            self._restrict_devices()
            self.apply(resources)
        except BaseException:
            for path in reversed(made):
                try:
                    os.rmdir(path)
                except OSError:
                    pass
            raise

    def _restrict_devices(self) -> None:
        """Deny every device but Docker's defaults.

        v1 (and hybrid): the devices controller's allowlist. v2: an eBPF device program attached
        to the cgroup (devicefilter.py). A directory merely laid out like a cgroup2 mount (the
        unit tests') has neither, and there this does nothing.
        """
        d = self.driver
        if d.v2:
            if d.device_filter_supported:
                devicefilter.attach(d.device_program(), d.mount_root / d.parent / self.name)
            return
        hier = d.hierarchies.get("devices")
        if hier is None:
            return
        path = self._by_hierarchy[hier]
        _write(path / "devices.deny", "a")
        allow = path / "devices.allow"
        for rule in DEFAULT_DEVICE_RULES:
            _write(allow, rule)

    def apply(self, r: Resources) -> None:
        """Write the limits (memory also bounds swap so the container really OOMs)."""
        v2 = self.driver.v2
        if r.memory:
            mem = self._dir("memory", "memory limit")
            if v2:
                _write(mem / "memory.max", str(r.memory))
                if (mem / "memory.swap.max").exists():
                    _write(mem / "memory.swap.max", "0")
            else:
                _write(mem / "memory.limit_in_bytes", str(r.memory))
                if (mem / "memory.memsw.limit_in_bytes").exists():
                    _write(mem / "memory.memsw.limit_in_bytes", str(r.memory))
        if r.cpus:
            cpu = self._dir("cpu", "cpus limit")
            quota = max(1000, int(r.cpus * CFS_PERIOD_US))
            if v2:
                _write(cpu / "cpu.max", f"{quota} {CFS_PERIOD_US}")
            else:
                _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(quota))
        if r.cpu_shares:
            cpu = self._dir("cpu", "cpu shares")
            if v2:
                _write(cpu / "cpu.weight", str(shares_to_weight(r.cpu_shares)))
            else:
                _write(cpu / "cpu.shares", str(r.cpu_shares))
        if r.pids_limit:
            _write(self._dir("pids", "pids limit") / "pids.max", str(r.pids_limit))

    # -- processes ----------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Every process (thread group) in the cgroup, across hierarchies."""
        found: set[int] = set()
        for path in self.paths():
            try:
                found.update(int(x) for x in (path / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                pass
        return sorted(found)

    def freeze(self, timeout: float = 10.0) -> None:
        """Freeze every process and return only once the kernel reports the cgroup frozen."""
        path = self._dir("freezer", "pause")
        deadline = time.monotonic() + timeout
        if self.driver.v2:
            _write(path / "cgroup.freeze", "1")
            while "frozen 1" not in (path / "cgroup.events").read_text().splitlines():
                self._wait(deadline, path)
        else:
            while True:
                _write(path / "freezer.state", "FROZEN")
                if _read(path / "freezer.state") == "FROZEN":
                    return
                self._wait(deadline, path)

    @staticmethod
    def _wait(deadline: float, path: Path) -> None:
        if time.monotonic() > deadline:
            raise RuntimeFault(f"cgroup {path} did not freeze in time")
        time.sleep(0.005)

    def thaw(self) -> None:
        path = self._dir("freezer", "unpause")
        if self.driver.v2:
            _write(path / "cgroup.freeze", "0")
        else:
            _write(path / "freezer.state", "THAWED")

    def frozen(self) -> bool:
        """True when the cgroup is frozen (or freezing): the container is paused."""
        try:
            path = self._dir("freezer", "pause")
            if self.driver.v2:
                return _read(path / "cgroup.freeze") == "1"
            return _read(path / "freezer.state") in ("FROZEN", "FREEZING")
        except (FileNotFoundError, InvalidArgument):
            return False

    # -- observations -------------------------------------------------------------------
    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this cgroup."""
        try:
            mem = self._dir("memory", "OOM detection")
        except InvalidArgument:
            return 0
        if self.driver.v2:
            return _kv(mem / "memory.events").get("oom_kill", 0)
        return _kv(mem / "memory.oom_control").get("oom_kill", 0)

    def stats(self) -> dict[str, int]:
        """CPU time, memory usage/limit and pids from the cgroup files (0 where unavailable)."""
        d = self.driver
        if d.v2:
            path = d.mount_root / d.parent / self.name
            cpu = _kv(path / "cpu.stat")
            return {
                "cpu_usage_ns": cpu.get("usage_usec", 0) * 1000,
                "cpu_user_ns": cpu.get("user_usec", 0) * 1000,
                "cpu_system_ns": cpu.get("system_usec", 0) * 1000,
                "memory_usage": _int_or_zero(path / "memory.current"),
                "memory_limit": _int_or_zero(path / "memory.max"),
                "pids_current": _int_or_zero(path / "pids.current"),
                "pids_limit": _int_or_zero(path / "pids.max"),
            }
        acct = d.hierarchies.get("cpuacct")
        mem = d.hierarchies.get("memory")
        pids = d.hierarchies.get("pids")
        sub = Path(d.parent) / self.name
        ticks = _kv(acct / sub / "cpuacct.stat") if acct else {}
        return {
            "cpu_usage_ns": _int_or_zero(acct / sub / "cpuacct.usage") if acct else 0,
            "cpu_user_ns": ticks.get("user", 0) * 1_000_000_000 // _USER_HZ,
            "cpu_system_ns": ticks.get("system", 0) * 1_000_000_000 // _USER_HZ,
            "memory_usage": _int_or_zero(mem / sub / "memory.usage_in_bytes") if mem else 0,
            "memory_limit": _int_or_zero(mem / sub / "memory.limit_in_bytes", unlimited=1 << 62) if mem else 0,
            "pids_current": _int_or_zero(pids / sub / "pids.current") if pids else 0,
            "pids_limit": _int_or_zero(pids / sub / "pids.max") if pids else 0,
        }

    # -- removal ------------------------------------------------------------------------
    def _rmdir_empty(self) -> bool:
        """rmdir the cgroup in every hierarchy; False if one still has tasks (EBUSY)."""
        done = True
        for path in self.paths():
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise RuntimeFault(f"cannot remove cgroup {path}: {e.strerror}") from None
                done = False
        return done

    def destroy(self, timeout: float = 10.0) -> None:
        """Kill whatever still runs in the cgroup, then remove it bottom-up in every hierarchy.

        First a plain rmdir everywhere: the kernel refuses it (EBUSY) while tasks remain, so an
        empty cgroup (every container whose shim reported its exit) goes without reading a file
        or waiting; only hierarchies that still hold tasks go through kill-and-remove.
        """
        if self._rmdir_empty():
            return
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            unified = self.driver.hierarchies.get("unified")
            kill_file = unified / self.driver.parent / self.name / "cgroup.kill" if unified else None
            if kill_file is not None and kill_file.exists():
                _write(kill_file, "1")  # race-free: the kernel kills by cgroup, not by pid
            else:
                kill_pids(pids)
            if self.frozen():
                self.thaw()  # a frozen task only dies once thawed
            if time.monotonic() > deadline:
                raise RuntimeFault(f"processes {pids} in cgroup {self.name} survived SIGKILL")
            time.sleep(0.01)
        for path in self.paths():
            _rmdir(path, deadline)


class CgroupDriver:
    """Finds the cgroup layout under `mount_root` and hands out per-container Cgroups."""

    def __init__(self, parent: str = "flotilla", mount_root: Path = DEFAULT_ROOT) -> None:
        if not _PARENT_RE.match(parent) or ".." in parent.split("/"):
            raise InvalidArgument(f"invalid cgroup parent {parent!r}: use a relative path of [a-zA-Z0-9_.-] names")
        self.parent = parent
        self.mount_root = Path(mount_root)
        self.v2 = (self.mount_root / "cgroup.controllers").exists()
        self.hierarchies: dict[str, Path] = {}
        self.v2_available: set[str] = set()
        self.parent_ready = False  # ensure_parent ran (reset by remove_parent)
        self._device_prog = -1  # the loaded eBPF device filter (v2), made on first use
        self.device_filter_supported = False
        self._cgroups: dict[str, Cgroup] = {}
        if self.v2:
            self.device_filter_supported = devicefilter.is_cgroup2(self.mount_root)
            self.hierarchies["unified"] = self.mount_root
            offered = set(_read(self.mount_root / "cgroup.controllers").split())
            self.v2_available = {c for c in V2_CONTROLLERS if c in offered}
        else:
            self._discover_v1()
        self.cpuset_roots = {h for h in self.hierarchies.values() if (h / "cpuset.cpus").exists()}

    def _discover_v1(self) -> None:
        """Every hierarchy directory below the mount root; its name says its controllers."""
        if not self.mount_root.is_dir():
            raise RuntimeFault(f"no cgroup filesystem at {self.mount_root}")
        for entry in sorted(self.mount_root.iterdir()):
            if entry.is_symlink() or not (entry / "cgroup.procs").exists():
                continue
            names = ["unified"] if (entry / "cgroup.controllers").exists() else entry.name.split(",")
            for name in names:
                self.hierarchies.setdefault(name, entry)
        if not self.hierarchies:
            raise RuntimeFault(f"no cgroup hierarchy found under {self.mount_root}")
        # comounted hierarchies (cpu,cpuacct) appear once per controller: keep one path each
        seen: dict[Path, str] = {}
        for name, path in list(self.hierarchies.items()):
            if path in seen:
                del self.hierarchies[name]
            else:
                seen[path] = name

    def device_program(self) -> int:
        """The fd of the eBPF device filter for DEFAULT_DEVICE_RULES, loaded once per driver."""
        if self._device_prog < 0:
            self._device_prog = devicefilter.load_program([devicefilter.DeviceRule.parse(r) for r in DEFAULT_DEVICE_RULES])
        return self._device_prog

    def close(self) -> None:
        """Release the device program's fd (programs stay attached to existing cgroups)."""
        if self._device_prog >= 0:
            os.close(self._device_prog)
            self._device_prog = -1

    def cgroup(self, name: str) -> Cgroup:
        """The Cgroup named `name`, kept for later calls (it holds only its paths)."""
        cg = self._cgroups.get(name)
        if cg is None:
            if not re.match(r"^[a-zA-Z0-9_.-]+$", name) or name in (".", ".."):
                raise InvalidArgument(f"invalid cgroup name {name!r}")
            if len(self._cgroups) >= 4096:  # bounded: removed containers' entries go eventually
                self._cgroups.clear()
            cg = self._cgroups[name] = Cgroup(self, name)
        return cg

    def ensure_parent(self) -> None:
        """Create the parent chain (v2: enabling our controllers on the way down)."""
        parts = self.parent.split("/")
        for hier in dict.fromkeys(self.hierarchies.values()):
            current = hier
            if self.v2 and self.v2_available:
                self._enable(current)
            for part in parts:
                current = current / part
                current.mkdir(exist_ok=True)
                self.inherit_cpuset(current)
                if self.v2 and self.v2_available:
                    self._enable(current)
        self.parent_ready = True

    def _enable(self, path: Path) -> None:
        wanted = " ".join(f"+{c}" for c in sorted(self.v2_available))
        try:
            current = set(_read(path / "cgroup.subtree_control").split())
        except FileNotFoundError:
            current = set()
        if not self.v2_available <= current:
            _write(path / "cgroup.subtree_control", wanted)

    def inherit_cpuset(self, path: Path) -> None:
        """v1 cpuset cgroups start empty and refuse tasks: copy cpus/mems from the parent."""
        for key in ("cpuset.cpus", "cpuset.mems"):
            f = path / key
            if f.exists() and not _read(f):
                _write(f, _read(path.parent / key))

    def remove_parent(self) -> None:
        """Remove the (empty) parent chain everywhere; container cgroups must be gone first."""
        self.parent_ready = False
        deadline = time.monotonic() + 5
        parts = self.parent.split("/")
        for hier in dict.fromkeys(self.hierarchies.values()):
            for depth in range(len(parts), 0, -1):
                path = hier.joinpath(*parts[:depth])
                try:
                    _rmdir(path, deadline)
                except RuntimeFault:
                    break  # still used (by another container or another user of an outer level)
