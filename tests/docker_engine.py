"""A private Docker engine for tests that need a real `docker` on the other side (save/load).

Never the host's engine: `dockerd` runs with its own data root, exec root, pidfile, unix
socket, containerd namespace and cgroup parent under a short temp dir, and with everything
that would touch the host's network switched off (`--iptables=false --ip6tables=false
--bridge=none --ip-forward=false --ip-masq=false`). The `docker` CLI gets `DOCKER_HOST` and a
`DOCKER_CONFIG` inside that dir, so no `~/.docker` appears either.

dockerd still creates a few paths outside its roots (`/etc/docker/key.json` in 20.10,
`/run/docker`, `/run/containerd`, and `/var/lib/docker` with some storage drivers): the ones
that did not exist before are removed again. Shut-down is by pid: SIGTERM to dockerd (which
stops the containerd it started), then SIGKILL to both if they linger, then any mount left
under the roots is unmounted and the dir deleted. `leftovers()` lists what would prove a leak:
processes whose command line names the dir, and mounts below it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from flotilla.runtime.children import dying_with_parent

HOST_PATHS = ("/etc/docker/key.json", "/run/docker", "/run/containerd", "/var/lib/docker", "/var/lib/containerd")


def dockerd_available() -> bool:
    """Both the engine and the client are installed (Debian's docker.io has both)."""
    return shutil.which("dockerd") is not None and shutil.which("docker") is not None


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Go forks from any thread, so every task's list is read)."""
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _cmdline(pid: int) -> bytes:
    """The process's command line, or b"" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _processes_mentioning(text: str) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and text.encode() in _cmdline(int(e))]


def _mounts_below(prefix: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


class DockerEngine:
    """A running private engine: `docker(...)` runs the CLI against it."""

    def __init__(self, root: Path, proc: subprocess.Popen) -> None:
        self.root, self.proc = root, proc
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{root / 'docker.sock'}", "DOCKER_CONFIG": str(root / "cli")}
        self.containerd: int | None = None

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, env=self.env)

    def leftovers(self) -> list[str]:
        """Processes and mounts of this engine still present (empty once it is shut down)."""
        return ([f"process {pid}" for pid in _processes_mentioning(str(self.root))]
                + [f"mount {m}" for m in _mounts_below(str(self.root) + "/")])


@contextmanager
def private_dockerd(suffix: str, timeout: float = 60.0) -> Iterator[DockerEngine]:
    """Start a private dockerd (names carry `suffix`); stop it and remove all of it afterwards."""
    existed = {p for p in HOST_PATHS if os.path.lexists(p)}
    root = Path(tempfile.mkdtemp(prefix=f"fd-{suffix}-", dir="/tmp"))  # short: unix socket paths are limited
    (root / "cli").mkdir()
    (root / "daemon.json").write_text("{}")  # never the host's /etc/docker/daemon.json
    log = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen(dying_with_parent(  # the engine dies with the test process, even on kill -9
        ["dockerd", "--config-file", str(root / "daemon.json"), "--data-root", str(root / "data"),
         "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{root / 'docker.sock'}",
         "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-forward=false", "--ip-masq=false",
         "--userland-proxy=false", "--cgroup-parent", f"flotilla-test-docker-{suffix}",
         "--containerd-namespace", f"flotilla-test-{suffix}", "--containerd-plugins-namespace", f"flotilla-test-{suffix}-p"]),
        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    engine = DockerEngine(root, proc)
    try:
        deadline = time.monotonic() + timeout
        while engine.docker("version", check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private dockerd did not come up: {(root / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        engine.containerd = next((p for p in children(proc.pid) if b"containerd" in _cmdline(p)), None)
        yield engine
    finally:
        _stop(engine)
        log.close()
        for p in sorted(set(HOST_PATHS) - existed, key=len, reverse=True):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                os.unlink(p)
        shutil.rmtree(root, ignore_errors=True)


def _stop(engine: DockerEngine) -> None:
    """SIGTERM dockerd (it stops its containerd), SIGKILL by pid whatever lingers, unmount."""
    proc = engine.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in [engine.containerd] if engine.containerd else []:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        for _ in range(250):
            if not alive(pid):
                break
            time.sleep(0.02)
    for point in reversed(_mounts_below(str(engine.root) + "/")):
        subprocess.run(["umount", "-l", point], capture_output=True)
