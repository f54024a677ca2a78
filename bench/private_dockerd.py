"""A private, throw-away Docker engine for benchmarks, leaving the host as it found it.

Benchmarks compare Flotilla with Docker in the same run, but a machine without a running
engine should not need one installed as a service, and a benchmark must not change the host:
`PrivateDockerd` starts `dockerd` with its own data root, exec root, pidfile, unix socket,
cgroup parent and containerd namespace under a temporary directory, and with everything that
would touch the host's network configuration switched off (`--iptables=false`,
`--ip6tables=false`, `--bridge=none`, `--ip-forward=false`, `--ip-masq=false`). Some side
effects cannot be switched off: `docker swarm init` creates the `docker_gwbridge` link (with
a veth into the ingress sandbox), raises the `net.ipv4.neigh.default.gc_thresh*` sysctls, and
dockerd writes `/etc/docker/key.json` and creates `/run/docker` and `/run/containerd`. So a
`HostState` snapshot is taken before the engine starts, and `close()` — always reached through
`with`, also on Ctrl-C or SIGTERM — kills the engine, its containerd, its shims and its
containers by pid, unmounts whatever is left under its roots, removes its cgroups, then
deletes Docker's links and the paths that were not there before, writes those sysctls back,
deletes any new iptables rule or chain naming DOCKER (none with these flags), and finally
compares the host with the snapshot again and prints any difference. Only Docker's own links,
rules and paths are looked at: other people create theirs on this machine meanwhile.

Usage:

    with PrivateDockerd(tmpdir, suffix) as engine:
        engine.docker("swarm", "init", ...)
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

from flotilla.runtime.children import dying_with_parent

# Sysctls Docker's overlay driver writes on the host even with the flags below (seen by diffing
# `sysctl -a`). Only these are put back: forwarding and bridge-netfilter switches are left to
# the tests running next to the benchmark, which set them too.
WATCHED_SYSCTLS = (
    "net/ipv4/neigh/default/gc_thresh1", "net/ipv4/neigh/default/gc_thresh2", "net/ipv4/neigh/default/gc_thresh3",
    "net/ipv6/neigh/default/gc_thresh1", "net/ipv6/neigh/default/gc_thresh2", "net/ipv6/neigh/default/gc_thresh3",
)
# Paths dockerd or its containerd create outside the roots they are given.
WATCHED_PATHS = ("/etc/docker/key.json", "/etc/docker", "/run/docker", "/run/containerd", "/var/lib/docker",
                 "/var/lib/containerd", "/var/run/docker.sock")


DOCKER_LINKS = ("docker_gwbridge", "docker0")


def _docker_links() -> set[str]:
    """Docker's bridges and the links enslaved to them. Other people create links on this
    machine at the same time, so only Docker's own are ever looked at or deleted."""
    found = set()
    for name in os.listdir("/sys/class/net"):
        master = Path("/sys/class/net", name, "master")
        if name in DOCKER_LINKS or (master.exists() and master.resolve().name in DOCKER_LINKS):
            found.add(name)
    return found


def _docker_rules() -> dict[str, set[str]]:
    """iptables/ip6tables lines (per table) that mention Docker's chains. Only those: other
    people's rules may change meanwhile and must not be touched."""
    rules: dict[str, set[str]] = {}
    for cmd in ("iptables", "ip6tables"):
        if not shutil.which(f"{cmd}-save"):
            continue
        table = ""
        for line in subprocess.run([f"{cmd}-save"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif "DOCKER" in line:
                rules.setdefault(cmd, set()).add(f"{table} {line}")
    return rules


class HostState:
    """What a Docker engine may change on the host, recorded so that it can be put back."""

    def __init__(self) -> None:
        self.links = _docker_links()
        self.sysctls = {}
        for key in WATCHED_SYSCTLS:
            try:
                self.sysctls[key] = Path("/proc/sys", key).read_text().strip()
            except OSError:
                pass  # module not loaded: nothing to restore
        self.paths = {p for p in WATCHED_PATHS if os.path.lexists(p)}
        self.rules = _docker_rules()

    def restore(self) -> None:
        """Undo what Docker changed since the snapshot: its links, sysctls, rules, new paths."""
        for link in sorted(_docker_links() - self.links, key=lambda n: n in DOCKER_LINKS):  # veths, then bridges
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for key, value in self.sysctls.items():
            path = Path("/proc/sys", key)
            try:
                if path.read_text().strip() != value:
                    path.write_text(value)
            except OSError:
                pass
        for cmd, lines in _docker_rules().items():
            new = lines - self.rules.get(cmd, set())
            for entry in sorted(new, key=lambda e: e.split()[1].startswith(":")):  # rules, then chains
                table, line = entry.split(" ", 1)
                if line.startswith("-A "):
                    subprocess.run([cmd, "-t", table, "-D", *line[3:].split()], capture_output=True)
                elif line.startswith(":"):
                    chain = line[1:].split()[0]
                    subprocess.run([cmd, "-t", table, "-F", chain], capture_output=True)
                    subprocess.run([cmd, "-t", table, "-X", chain], capture_output=True)
        for p in sorted(set(WATCHED_PATHS) - self.paths, key=len, reverse=True):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                os.unlink(p)

    def differences(self) -> list[str]:
        """What still differs from the snapshot (empty: the host is as it was)."""
        now = HostState()
        diffs = [f"link {name} {'added' if name in now.links else 'gone'}" for name in now.links ^ self.links]
        diffs += [f"sysctl {k} {v} -> {now.sysctls.get(k)}" for k, v in self.sysctls.items() if now.sysctls.get(k) != v]
        diffs += [f"path {p} {'added' if p in now.paths else 'gone'}" for p in now.paths ^ self.paths]
        diffs += [f"{cmd}: {e}" for cmd in now.rules.keys() | self.rules.keys()
                  for e in now.rules.get(cmd, set()) ^ self.rules.get(cmd, set())]
        return diffs


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self._path)


class DockerEngine:
    """A Docker engine reached on a unix socket: the `docker` CLI and the Engine API."""

    def __init__(self, sock: Path, cli_config: Path | None = None) -> None:
        self.sock = sock
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
        if cli_config is not None:
            self.env["DOCKER_CONFIG"] = str(cli_config)  # no ~/.docker created on the host

    def docker(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, env=self.env,
                              input=input)

    def api(self, path: str, **query: str) -> object:
        """GET on the Engine API (cheaper than a `docker` process per poll, like the gRPC polls
        on Flotilla's side)."""
        conn = _UnixHTTPConnection(str(self.sock))
        try:
            conn.request("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"docker API {path}: {resp.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def daemon_pids(self) -> dict[str, int]:
        """dockerd and containerd, for their memory (empty for an engine we did not start)."""
        return {}

    def shim_pids(self) -> list[int]:
        return [pid for pid in _pids() if "containerd-shim" in _cmdline(pid)]


def host_docker() -> DockerEngine | None:
    """The engine that answers `docker info` (DOCKER_HOST or the default socket), if any."""
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return None
    return DockerEngine(Path(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")))


class PrivateDockerd(DockerEngine):
    """dockerd + its containerd under `tmp`, torn down completely by `close()`."""

    def __init__(self, tmp: Path, suffix: str) -> None:
        self.dir = tmp / "docker"
        super().__init__(self.dir / "docker.sock", self.dir / "cli")
        self.data_root = self.dir / "data"
        self.exec_root = self.dir / "exec"
        self.cgroup_parent = f"flotilla-bench-docker-{suffix}"
        self.namespace = f"flotilla-bench-{suffix}"
        self.proc: subprocess.Popen | None = None
        self.containerd_pid: int | None = None
        self._host: HostState | None = None

    def __enter__(self) -> PrivateDockerd:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._host = HostState()
        for d in (self.data_root, self.exec_root, self.dir / "cli"):
            d.mkdir(parents=True, exist_ok=True)
        (self.dir / "daemon.json").write_text("{}")  # never the host's /etc/docker/daemon.json
        with open(self.dir / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(dying_with_parent(  # dockerd dies with the benchmark, even on kill -9
                ["dockerd", "--config-file", str(self.dir / "daemon.json"), "--data-root", str(self.data_root),
                 "--exec-root", str(self.exec_root), "--pidfile", str(self.dir / "dockerd.pid"),
                 "-H", f"unix://{self.sock}", "--iptables=false", "--ip6tables=false", "--bridge=none",
                 "--ip-forward=false", "--ip-masq=false", "--userland-proxy=false",
                 "--cgroup-parent", self.cgroup_parent, "--containerd-namespace", self.namespace,
                 "--containerd-plugins-namespace", f"{self.namespace}-plugins"]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while self.docker("info", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"private dockerd did not come up; see {self.dir / 'dockerd.log'}")
            time.sleep(0.2)
        kids = [int(p) for t in Path(f"/proc/{self.proc.pid}/task").iterdir()  # Go forks from any thread
                for p in (t / "children").read_text().split()]
        self.containerd_pid = next((p for p in kids if "containerd" in _cmdline(p)), None)

    def daemon_pids(self) -> dict[str, int]:
        pids = {"dockerd": self.proc.pid} if self.proc is not None else {}
        if self.containerd_pid is not None:
            pids["containerd"] = self.containerd_pid
        return pids

    def shim_pids(self) -> list[int]:
        """containerd-shim-runc-v2 processes of this engine (they are re-parented to init)."""
        address = f"{self.exec_root}/containerd/containerd.sock"
        return [pid for pid in _pids() if "containerd-shim" in (c := _cmdline(pid)) and address in c]

    def close(self) -> None:
        """Kill everything of this engine by pid, then put the host back as it was."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.docker("swarm", "leave", "--force", check=False)
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.containerd_pid is not None and _cmdline(self.containerd_pid):
                _kill(self.containerd_pid)
            for pid in self.shim_pids():
                _kill(pid)
            self._kill_cgroup_and_remove()
            self._unmount_roots()
            if self._host is not None:
                self._host.restore()
                diffs = self._host.differences()
                if diffs:
                    print(f"warning: the host still differs after the private dockerd: {'; '.join(diffs)}")
            shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _kill_cgroup_and_remove(self) -> None:
        """Container processes left (a dockerd killed hard): SIGKILL by pid, then the cgroups go."""
        parents = [p for p in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}") if not p.parent.is_symlink()]
        for _ in range(50):
            pids = {int(x) for parent in parents for procs in parent.rglob("cgroup.procs")
                    for x in procs.read_text().split()}
            if not pids:
                break
            for pid in pids:
                _kill(pid, wait=False)
            time.sleep(0.1)
        for parent in parents:
            for child in sorted((d for d in parent.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
                child.rmdir()
            parent.rmdir()

    def _unmount_roots(self) -> None:
        """Overlay, shm and netns mounts dockerd left under its roots (it unmounts them itself
        on a clean exit; a hard kill leaves them)."""
        roots = (str(self.dir) + "/",)
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].replace("\\040", " ") for line in f]
        for point in reversed(points):
            if point.startswith(roots):
                subprocess.run(["umount", "-l", point], capture_output=True)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill(pid: int, wait: bool = True) -> None:
    """SIGKILL one process we identified (by pid, never by name) and wait until it is gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(100 if wait else 0):
        if not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z":
            return
        time.sleep(0.02)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
