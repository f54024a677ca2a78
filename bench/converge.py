"""Cluster convergence: Flotilla's `swarmd all-in-one` side by side with Docker swarm mode.

Measures, on a fresh single-machine cluster (own temporary root, sockets, loopback ports and
cgroup parent `flotilla-bench-<random>`):
  (1) `service create` of N replicas of busybox `sleep` until N tasks RUNNING (and N containers up)
  (2) scale N -> 2N until 2N RUNNING
  (3) `service rm` until no container is left on the node
and the RSS of the agent and the manager with 2N tasks. Where a Docker engine answers
(`docker info`), the same three steps with `docker swarm init` + `docker service create` on a
busybox image imported from the same rootfs tar, then `docker swarm leave --force`; ratios are
printed. Without an engine the reference measured here before is printed for context (Docker:
16.2 s for 50 replicas, 16.6 s to scale 50 -> 100, 20.2 s to remove 100).

Both sides use their default stop grace period (10 s) on `sleep`, which ignores SIGTERM as pid 1.
Everything it created is removed at the end, whatever happens.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
from flotilla.proto import control_pb2 as cpb  # noqa: E402
from flotilla.proto import control_pb2_grpc as cgrpc  # noqa: E402
from flotilla.proto import objects_pb2 as pb  # noqa: E402
from flotilla.swarmd.allinone import free_port  # noqa: E402
from flotilla.swarmd.busybox_image import write_busybox_tar  # noqa: E402

REFERENCE = {"create": (50, 16.2), "scale": (50, 16.6), "remove": (100, 20.2)}  # Docker, measured here before
IMAGE = "busybox:latest"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def poll(predicate, timeout: float, what: str, interval: float = 0.1) -> float:
    """Seconds until `predicate()` is true (raises after `timeout`)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


class Flotilla:
    def __init__(self, tmp: Path, suffix: str) -> None:
        self.tmp = tmp
        self.root = tmp / "root"
        self.control_sock = tmp / "control.sock"
        self.agent_sock = tmp / "agent.sock"
        self.cgroup_parent = f"flotilla-bench-{suffix}"
        self.remote = f"127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None
        self.channel = grpc.insecure_channel(f"unix://{self.control_sock}")
        self.control = cgrpc.ControlStub(self.channel)

    def start(self, tar: Path) -> None:
        with open(self.tmp / "swarmd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "swarmd"), "all-in-one", "--root", str(self.root), "--listen-control",
                 f"unix://{self.control_sock}", "--listen-remote", self.remote, "--listen-local",
                 f"unix://{self.agent_sock}", "--cgroup-parent", self.cgroup_parent],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        poll(lambda: self.ctl("ps", check=False).returncode == 0 or self.proc.poll() is not None, 60, "all-in-one")
        if self.proc.poll() is not None:
            raise SystemExit(f"swarmd all-in-one exited; see {self.tmp / 'swarmd.log'}")
        self.ctl("image", "import", str(tar), IMAGE)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "swarmctl"), "-H", f"unix://{self.agent_sock}", *args], check=check,
                              capture_output=True, text=True)

    def containers(self, running: bool) -> int:
        return len(self.ctl("ps", "-q", *([] if running else ["-a"])).stdout.split())

    def running_tasks(self, service_id: str) -> int:
        tasks = self.control.ListTasks(cpb.ListTasksRequest(service_ids=[service_id])).tasks
        return sum(1 for t in tasks if t.status.state == pb.RUNNING and t.desired_state == pb.RUNNING)

    def run(self, n: int) -> dict[str, float]:
        spec = pb.ServiceSpec()
        spec.annotations.name = "bench"
        spec.task.container.image = IMAGE
        spec.task.container.args.extend(["sleep", "1000000"])
        spec.replicated.replicas = n
        out: dict[str, float] = {}
        t0 = time.monotonic()
        svc = self.control.CreateService(cpb.CreateServiceRequest(spec=spec)).service
        poll(lambda: self.running_tasks(svc.id) >= n and self.containers(True) >= n, 600, f"{n} running")
        out["create"] = time.monotonic() - t0
        current = self.control.GetService(cpb.GetServiceRequest(service_id=svc.id)).service
        spec.replicated.replicas = 2 * n
        t0 = time.monotonic()
        self.control.UpdateService(cpb.UpdateServiceRequest(service_id=svc.id, service_version=current.meta.version,
                                                            spec=spec))
        poll(lambda: self.running_tasks(svc.id) >= 2 * n and self.containers(True) >= 2 * n, 600, f"{2 * n} running")
        out["scale"] = time.monotonic() - t0
        parts = {cmdline(p).split()[2] if len(cmdline(p).split()) > 2 else "": p for p in children(self.proc.pid)}
        out["agent_rss"] = rss_mb(parts["agent"]) if "agent" in parts else 0.0
        out["manager_rss"] = rss_mb(parts["manager"]) if "manager" in parts else 0.0
        t0 = time.monotonic()
        self.control.RemoveService(cpb.RemoveServiceRequest(service_id=svc.id))
        poll(lambda: self.containers(False) == 0, 600, "every container removed", interval=0.25)
        out["remove"] = time.monotonic() - t0
        return out

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for cid in self.ctl("ps", "-aq", check=False).stdout.split():
                self.ctl("rm", "-f", cid, check=False)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.channel.close()
        for parent in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
            if not parent.parent.is_symlink():
                for child in sorted(parent.rglob("*"), reverse=True):
                    if child.is_dir():
                        child.rmdir()
                parent.rmdir()


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True)


def docker_run(n: int, tar: Path, suffix: str) -> dict[str, float]:
    """The same steps on Docker swarm mode (a single-node swarm on loopback)."""
    image = f"flotilla-bench-busybox:{suffix}"
    name = f"flotilla-bench-{suffix}"
    docker("import", "--change", 'CMD ["sh"]', str(tar), image)
    docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    label = f"label=com.docker.swarm.service.name={name}"

    def running() -> int:
        return len(docker("ps", "-q", "--filter", label).stdout.split())

    out: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        docker("service", "create", "--detach", "--name", name, "--replicas", str(n), image, "sleep", "1000000")
        poll(lambda: running() >= n, 900, f"docker: {n} running", interval=0.25)
        out["create"] = time.monotonic() - t0
        t0 = time.monotonic()
        docker("service", "scale", "--detach", f"{name}={2 * n}")
        poll(lambda: running() >= 2 * n, 900, f"docker: {2 * n} running", interval=0.25)
        out["scale"] = time.monotonic() - t0
        t0 = time.monotonic()
        docker("service", "rm", name)
        poll(lambda: not docker("ps", "-aq", "--filter", label).stdout.split(), 900, "docker: containers removed",
             interval=0.25)
        out["remove"] = time.monotonic() - t0
    finally:
        docker("service", "rm", name, check=False)
        docker("swarm", "leave", "--force", check=False)
        docker("image", "rm", image, check=False)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=100, help="N: create N, scale to 2N, remove (default 100)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/converge.py needs root (it runs containers)")
    suffix = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix=f"flotilla-converge-{suffix}-"))
    n = args.replicas
    fl = Flotilla(tmp, suffix)
    try:
        tar = write_busybox_tar(tmp / "busybox.tar")
        fl.start(tar)
        ours = fl.run(n)
        theirs = docker_run(n, tar, suffix) if docker_available() else None
    finally:
        fl.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nconvergence on one node, busybox sleep, N={n}")
    print(f"{'step':<28}{'flotilla':>10}{'docker':>10}{'ratio':>8}")
    steps = {"create": f"create {n} -> running", "scale": f"scale {n} -> {2 * n}", "remove": f"rm {2 * n} -> none"}
    for key, label in steps.items():
        if theirs:
            print(f"{label:<28}{ours[key]:>9.1f}s{theirs[key]:>9.1f}s{ours[key] / theirs[key]:>8.2f}")
        else:
            print(f"{label:<28}{ours[key]:>9.1f}s{'-':>10}{'-':>8}")
    if not theirs:
        ref = ", ".join(f"{k} {v[1]} s ({v[0]} replicas)" for k, v in REFERENCE.items())
        print(f"(no Docker engine answers `docker info`; reference measured here before: {ref})")
    print(f"RSS with {2 * n} tasks: agent {ours['agent_rss']:.0f} MB, manager {ours['manager_rss']:.0f} MB")
    print(json.dumps({"flotilla": ours, "docker": theirs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
