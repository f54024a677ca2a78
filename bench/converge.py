"""Cluster convergence: Flotilla's `swarmd all-in-one` side by side with Docker swarm mode.

Measures, on a fresh single-machine cluster (own temporary root, sockets, loopback ports and
cgroup parent `flotilla-bench-<random>`):
  (1) `service create` of N replicas of busybox `sleep` until N tasks RUNNING (and N containers up)
  (2) scale N -> 2N until 2N RUNNING
  (3) `service rm` until no container is left on the node
and the memory of the daemons with 2N tasks. Then the same three steps on Docker swarm mode
(`docker swarm init` on loopback, `docker service create` of a busybox image imported from the
same rootfs tar) and the ratios. Docker is the engine that answers `docker info`, or else, when
the `dockerd` binary is installed (Debian package docker.io), a private dockerd started for the
run (bench/private_dockerd.py: own roots and socket, host networking untouched, every side
effect undone at the end). Without either, the reference measured here before is printed
(Docker: 16.2 s for 50 replicas, 16.6 s to scale 50 -> 100, 20.2 s to remove 100).

Both sides get the same stop grace period (10 s, both defaults) on `sleep`, which as pid 1 never
sees SIGTERM (the kernel drops a signal a namespace's init does not catch): Docker waits the grace
period out, Flotilla sees the signal was dropped and sends SIGKILL at once (docs/runtime.md). With
`--init` both sides run the tasks under an init (Flotilla's `--init`, Docker's `--init`, i.e.
tini), which hands the stop signal to `sleep`: then neither side waits.
Both sides are polled through their APIs (gRPC; the Engine API on a unix socket), never by
starting a CLI process per poll, which would compete with the daemons for the two cores.
Everything it created is removed at the end, whatever happens (Ctrl-C and SIGTERM included).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
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
from flotilla.proto import runtime_pb2 as rpb  # noqa: E402
from flotilla.proto import runtime_pb2_grpc as rgrpc  # noqa: E402
from flotilla.swarmd.allinone import free_port  # noqa: E402
from flotilla.swarmd.busybox_image import write_busybox_tar  # noqa: E402
from private_dockerd import DockerEngine, PrivateDockerd, host_docker  # noqa: E402

REFERENCE = {"create": (50, 16.2), "scale": (50, 16.6), "remove": (100, 20.2)}  # Docker, measured here before
IMAGE = "busybox:latest"
GRACE = 10  # seconds of stop grace period, on both sides (both defaults)


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages (the shim binary, libc) divided among their users,
    so that a sum over 200 shims is the memory they really take."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def poll(predicate, timeout: float, what: str, interval: float = 0.05) -> float:
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
        self.agent_channel = grpc.insecure_channel(f"unix://{self.agent_sock}")
        self.agent = rgrpc.RuntimeStub(self.agent_channel)

    def start(self, tar: Path) -> None:
        with open(self.tmp / "swarmd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "swarmd"), "all-in-one", "--root", str(self.root), "--listen-control",
                 f"unix://{self.control_sock}", "--listen-remote", self.remote, "--listen-local",
                 f"unix://{self.agent_sock}", "--cgroup-parent", self.cgroup_parent],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        poll(lambda: self.ctl("ps", check=False).returncode == 0 or self.proc.poll() is not None, 60, "all-in-one",
             interval=0.2)
        if self.proc.poll() is not None:
            raise SystemExit(f"swarmd all-in-one exited; see {self.tmp / 'swarmd.log'}")
        self.ctl("image", "import", str(tar), IMAGE)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "swarmctl"), "-H", f"unix://{self.agent_sock}", *args], check=check,
                              capture_output=True, text=True)

    def containers(self, running: bool) -> int:
        listed = self.agent.ListContainers(rpb.ListContainersRequest(all=not running)).containers
        return sum(1 for c in listed if not running or c.status == "running")

    def bundles(self) -> int:
        """Containers that exist on the node, read from the runtime's state directory: a bundle
        is renamed away the moment its container is deleted. Asking the agent instead
        (ListContainers) would make it derive the status of all 200 under its lock four times a
        second, in the middle of the removals being measured; Docker's container list is an
        in-memory read."""
        return sum(1 for e in os.scandir(self.root / "containers") if len(e.name) == 64 and e.is_dir())

    def running_tasks(self, service_id: str) -> int:
        tasks = self.control.ListTasks(cpb.ListTasksRequest(service_ids=[service_id])).tasks
        return sum(1 for t in tasks if t.status.state == pb.RUNNING and t.desired_state == pb.RUNNING)

    def converged(self, service_id: str, n: int) -> bool:
        """n tasks RUNNING (the manager's cache, cheap), then n containers running on the node
        (listing them costs the agent a read of every container's state, so only then)."""
        return self.running_tasks(service_id) >= n and self.containers(True) >= n

    def memory(self) -> dict[str, float]:
        """RSS of each part of all-in-one, and the PSS of all the task containers' shims together
        (reported apart, as Docker's containerd-shims are apart from dockerd and containerd)."""
        out = {}
        for pid in children(self.proc.pid):
            args = cmdline(pid)
            part = "etcd" if Path(args[0]).name == "etcd" else (args[2] if len(args) > 2 else "")
            if part in ("agent", "manager", "etcd"):
                out[part] = rss_mb(pid)
        root = str(self.root)
        shims = [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if (a := cmdline(p)) and a[0].endswith("flotilla-shim") and any(root in x for x in a)]
        out["shims"] = sum(map(pss_mb, shims))
        out["shim_count"] = len(shims)
        # With --init each shim's child stays a fork of it (sharing its pages, which lowers the
        # shims' PSS): the inits' PSS is reported next to it, so the sum stays comparable.
        inits = [c for s in shims for c in children(s) if cmdline(c)[:1] == ["flotilla-init"]]
        if inits:
            out["inits (PSS)"] = sum(map(pss_mb, inits))
        return out

    def profile(self, out: Path) -> list[subprocess.Popen]:
        """py-spy (pip install py-spy; not a dependency) on the agent and the manager, as
        collapsed stacks `<out>/<part>.txt`, until the processes are interrupted."""
        spy = shutil.which("py-spy") or str(BIN / "py-spy")
        out.mkdir(parents=True, exist_ok=True)
        procs = []
        for pid in children(self.proc.pid):
            args = cmdline(pid)
            if len(args) > 2 and args[2] in ("agent", "manager"):
                procs.append(subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                                               "--threads", "--idle", "-o", str(out / f"{args[2]}.txt")],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)  # py-spy attaches
        return procs

    def run(self, n: int, profile: Path | None = None, init: bool = False) -> dict[str, object]:
        spies = self.profile(profile) if profile else []
        try:
            return self._run(n, init)
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait()

    def _run(self, n: int, init: bool) -> dict[str, object]:
        spec = pb.ServiceSpec()
        spec.annotations.name = "bench"
        spec.task.container.image = IMAGE
        spec.task.container.args.extend(["sleep", "1000000"])
        spec.task.container.stop_grace_period.seconds = GRACE
        spec.task.container.init = init
        spec.replicated.replicas = n
        out: dict[str, object] = {}
        t0 = time.monotonic()
        svc = self.control.CreateService(cpb.CreateServiceRequest(spec=spec)).service
        poll(lambda: self.converged(svc.id, n), 600, f"{n} running")
        out["create"] = time.monotonic() - t0
        current = self.control.GetService(cpb.GetServiceRequest(service_id=svc.id)).service
        spec.replicated.replicas = 2 * n
        t0 = time.monotonic()
        self.control.UpdateService(cpb.UpdateServiceRequest(service_id=svc.id, service_version=current.meta.version,
                                                            spec=spec))
        poll(lambda: self.converged(svc.id, 2 * n), 600, f"{2 * n} running")
        out["scale"] = time.monotonic() - t0
        out["memory"] = self.memory()
        t0 = time.monotonic()
        self.control.RemoveService(cpb.RemoveServiceRequest(service_id=svc.id))
        poll(lambda: self.bundles() == 0, 600, "every container removed", interval=0.25)
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
        self.agent_channel.close()
        for parent in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
            if not parent.parent.is_symlink():
                for child in sorted(parent.rglob("*"), reverse=True):
                    if child.is_dir():
                        child.rmdir()
                parent.rmdir()


def free_udp_port() -> int:
    """A free UDP port in the range Docker accepts for `--data-path-port` (1024-49151)."""
    while True:
        port = random.randint(20000, 49151)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def docker_run(engine: DockerEngine, n: int, tar: Path, suffix: str, init: bool) -> dict[str, object]:
    """The same steps on Docker swarm mode (a single-node swarm on loopback)."""
    image = f"flotilla-bench-busybox:{suffix}"
    name = f"flotilla-bench-{suffix}"
    label = f"com.docker.swarm.service.name={name}"
    engine.docker("import", "--change", 'CMD ["sh"]', str(tar), image)
    engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{free_port()}",
                  "--data-path-addr", "127.0.0.1", "--data-path-port", str(free_udp_port()))

    def containers(running: bool) -> int:
        filters = {"label": [label], **({"status": ["running"]} if running else {})}
        return len(engine.api("/containers/json", all="0" if running else "1", filters=json.dumps(filters)))

    out: dict[str, object] = {}
    try:
        t0 = time.monotonic()
        engine.docker("service", "create", "--detach", "--name", name, "--replicas", str(n),
                      "--stop-grace-period", f"{GRACE}s", *(["--init"] if init else []), image, "sleep", "1000000")
        poll(lambda: containers(True) >= n, 900, f"docker: {n} running")
        out["create"] = time.monotonic() - t0
        t0 = time.monotonic()
        engine.docker("service", "scale", "--detach", f"{name}={2 * n}")
        poll(lambda: containers(True) >= 2 * n, 900, f"docker: {2 * n} running")
        out["scale"] = time.monotonic() - t0
        memory = {part: rss_mb(pid) for part, pid in engine.daemon_pids().items()}
        shims = engine.shim_pids()
        memory["shims"] = sum(map(pss_mb, shims))
        memory["shim_count"] = len(shims)
        out["memory"] = memory
        t0 = time.monotonic()
        engine.docker("service", "rm", name)
        poll(lambda: containers(False) == 0, 900, "docker: containers removed", interval=0.25)
        out["remove"] = time.monotonic() - t0
    finally:
        engine.docker("service", "rm", name, check=False)
        engine.docker("swarm", "leave", "--force", check=False)
        engine.docker("image", "rm", image, check=False)
    return out


def measure_docker(n: int, tar: Path, tmp: Path, suffix: str, mode: str, init: bool) -> dict[str, object] | None:
    if mode == "none":
        return None
    engine = host_docker() if mode == "auto" else None
    if engine is not None:
        print("docker: using the engine that answers `docker info`", file=sys.stderr)
        return docker_run(engine, n, tar, suffix, init)
    if not shutil.which("dockerd") or not shutil.which("docker"):
        return None
    print("docker: starting a private dockerd for this run", file=sys.stderr)
    with PrivateDockerd(tmp, suffix) as engine:
        return docker_run(engine, n, tar, suffix, init)


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every `finally`


def fmt_memory(mem: dict[str, float]) -> str:
    parts = [f"{k} {v:.0f} MB" for k, v in mem.items() if k not in ("shims", "shim_count")]
    return ", ".join(parts + [f"{int(mem['shim_count'])} shims {mem['shims']:.0f} MB together (PSS)"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=100, help="N: create N, scale to 2N, remove (default 100)")
    parser.add_argument("--docker", choices=("auto", "private", "none"), default="auto",
                        help="auto: the engine answering `docker info`, else a private dockerd; "
                             "private: always a private dockerd; none: Flotilla only")
    parser.add_argument("--init", action="store_true",
                        help="run the tasks under an init on both sides (the stop signal then ends `sleep` at once)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record the agent and the manager with py-spy into DIR/agent.txt, DIR/manager.txt")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/converge.py needs root (it runs containers)")
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    suffix = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix=f"fconv-{suffix}-"))  # short: dockerd puts unix sockets under it
    n = args.replicas
    fl = Flotilla(tmp, suffix)
    try:
        tar = write_busybox_tar(tmp / "busybox.tar")
        fl.start(tar)
        ours = fl.run(n, args.profile, args.init)
        fl.close()
        theirs = measure_docker(n, tar, tmp, suffix, args.docker, args.init)
    finally:
        fl.close()
        shutil.rmtree(tmp, ignore_errors=True)
    mode = "under an init (--init) on both" if args.init else "as pid 1 (ignores SIGTERM) on both"
    print(f"\nconvergence on one node, busybox sleep {mode}, N={n}, stop grace {GRACE} s on both; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'step':<28}{'flotilla':>10}{'docker':>10}{'docker/flotilla':>17}")
    steps = {"create": f"create {n} -> running", "scale": f"scale {n} -> {2 * n}", "remove": f"rm {2 * n} -> none"}
    for key, label in steps.items():
        if theirs:
            print(f"{label:<28}{ours[key]:>9.2f}s{theirs[key]:>9.2f}s{theirs[key] / ours[key]:>16.1f}x")
        else:
            print(f"{label:<28}{ours[key]:>9.2f}s{'-':>10}{'-':>17}")
    if not args.init:
        print(f"(rm: `sleep` as pid 1 never sees the SIGTERM, the kernel drops it; Docker waits out the {GRACE} s "
              "grace anyway, Flotilla sees the signal was dropped and sends SIGKILL at once)")
    if not theirs:
        ref = ", ".join(f"{k} {v[1]} s ({v[0]} replicas)" for k, v in REFERENCE.items())
        why = "--docker none" if args.docker == "none" else "no Docker engine and no dockerd binary"
        print(f"({why}; Docker's reference measured here before: {ref})")
    print(f"memory with {2 * n} tasks, flotilla: {fmt_memory(ours['memory'])}")
    if theirs:
        print(f"memory with {2 * n} tasks, docker:   {fmt_memory(theirs['memory'])}")
    print(json.dumps({"flotilla": ours, "docker": theirs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
