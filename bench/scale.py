"""Scale benchmark of the manager: etcd + `swarmd manager` + `swarmd hollow` nodes.

Creates services totalling --tasks tasks over --nodes hollow nodes, measures the time until
every task is RUNNING (as the manager sees it), scheduling decisions per second, the
manager's peak RSS and etcd's database size; then scales every service to zero and measures
the time until no task is left running. Not a test: it prints numbers and the references.

    .venv/bin/python bench/scale.py                       # 100,000 tasks on 1,000 nodes
    .venv/bin/python bench/scale.py --nodes 100 --tasks 10000

Everything runs on loopback, in a temporary directory removed at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc

from flotilla.proto import control_pb2 as cpb
from flotilla.proto import control_pb2_grpc as cgrpc
from flotilla.proto import objects_pb2 as pb
from flotilla.runtime.children import dying_with_parent

VENV_BIN = Path(sys.executable).parent
REFERENCES = """\
references (other systems, other hardware; for orientation only):
  SwarmKit scheduler benchmark   100,000 tasks on 1,000 nodes in 22.6 s (scheduler only, no persistence)
  Nomad C1M                      ~3,750 containers/s scheduled (5,000 nodes, 1,000,000 containers)
  Kubernetes                     ~100 pods/s (default scheduler throughput SLO era)
goal: 100,000 tasks on 1,000 nodes all RUNNING in 60 s, etcd included"""


ASSIGNED_TOTAL = -1  # key of the scheduler's assigned-tasks counter in task_states()
DOWN_NODES = -2  # key of the count of DOWN nodes in task_states()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Child processes started by the benchmark, stopped (and reaped) at the end."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")
        # dying_with_parent: killed when the benchmark dies, however it dies
        proc = subprocess.Popen(dying_with_parent(argv), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def rss_bytes(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) * 1024 if m else 0


class Sampler:
    """Samples the manager's RSS while the benchmark runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self.pid))
            await asyncio.sleep(0.25)


class Prober:
    """Asks the manager's health service twice a second on a connection of its own and keeps
    the slowest answer: how long a heartbeat or a status report would wait to be taken (the
    100k stall showed as calls not answered for 10 s and more)."""

    def __init__(self, remote: str) -> None:
        self.remote = remote
        self.slowest = 0.0
        self.failed = 0

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.remote) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda _: b"",
                                        response_deserializer=lambda b: b)
            while True:
                started = time.monotonic()
                try:
                    await check(None, timeout=30)
                except grpc.aio.AioRpcError:
                    self.failed += 1
                self.slowest = max(self.slowest, time.monotonic() - started)
                await asyncio.sleep(0.5)


async def task_states(metrics_url: str) -> dict[int, int]:
    """Count of tasks per status, from the manager's `flotilla_tasks` gauge (the manager
    refreshes it from its cache every 2 s, so a finish time read here is late by at most that;
    listing 100,000 tasks over the Control API every second would load the manager instead)."""
    def fetch() -> str:
        with urllib.request.urlopen(metrics_url, timeout=10) as resp:
            return resp.read().decode()
    text = await asyncio.to_thread(fetch)
    m = re.search(r"^flotilla_scheduler_assigned_tasks_total (\S+)$", text, re.MULTILINE)
    counts: dict[int, int] = {ASSIGNED_TOTAL: int(float(m.group(1))) if m else 0}
    m = re.search(r'^flotilla_nodes\{state="DOWN"\} (\S+)$', text, re.MULTILINE)
    counts[DOWN_NODES] = int(float(m.group(1))) if m else 0
    for m in re.finditer(r'^flotilla_tasks\{state="(\w+)"\} (\S+)$', text, re.MULTILINE):
        if float(m.group(2)):
            counts[pb.TaskState.Value(m.group(1))] = int(float(m.group(2)))
    return counts


async def wait_nodes(control: cgrpc.ControlStub, want: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        nodes = (await control.ListNodes(cpb.ListNodesRequest())).nodes
        if sum(n.status.state == pb.NodeStatus.READY for n in nodes) >= want:
            return time.monotonic() - start
        await asyncio.sleep(0.5)
    raise SystemExit(f"only some of {want} hollow nodes became READY in {timeout:.0f} s")


def spec(name: str, replicas: int) -> pb.ServiceSpec:
    s = pb.ServiceSpec()
    s.annotations.name = name
    s.task.container.image = "busybox:latest"
    s.task.container.command.extend(["sleep", "infinity"])
    s.replicated.replicas = replicas
    return s


async def wait_running(metrics_url: str, total: int, start: float, timeout: float, base: int) -> tuple[float, float]:
    """Poll until `total` tasks are RUNNING; print progress; return (elapsed seconds, seconds
    until the scheduler had assigned them all)."""
    last = -1
    scheduled_at = None
    while True:
        counts = await task_states(metrics_url)
        assigned = counts.pop(ASSIGNED_TOTAL) - base
        down = counts.pop(DOWN_NODES)
        running = counts.get(pb.RUNNING, 0)
        elapsed = time.monotonic() - start
        if scheduled_at is None and assigned >= total:
            scheduled_at = elapsed
        if running != last:
            summary = ", ".join(f"{pb.TaskState.Name(k)} {v}" for k, v in sorted(counts.items()))
            print(f"  {elapsed:6.1f} s  scheduled {assigned}; {summary}; nodes DOWN {down}", flush=True)
            last = running
        if running >= total:
            return elapsed, scheduled_at or elapsed
        if elapsed > timeout:
            raise SystemExit(f"scale up: only {running} of {total} tasks RUNNING after {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def wait_gone(metrics_url: str, start: float, timeout: float) -> float:
    while True:
        counts = await task_states(metrics_url)
        counts.pop(ASSIGNED_TOTAL)
        counts.pop(DOWN_NODES)
        live = sum(v for k, v in counts.items() if k <= pb.RUNNING)
        elapsed = time.monotonic() - start
        print(f"  {elapsed:6.1f} s  scale to zero: {live} tasks not stopped, {sum(counts.values())} stored", flush=True)
        if live == 0:
            return elapsed
        if elapsed > timeout:
            raise SystemExit(f"scale to zero: {live} tasks still not stopped after {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def bench(args: argparse.Namespace, tmp: Path, procs: Processes) -> None:
    etcd_port, peer_port, remote_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    procs.start("etcd", [
        "etcd", "--name", "bench", "--data-dir", str(tmp / "etcd"),
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"bench=http://127.0.0.1:{peer_port}",
        "--quota-backend-bytes", str(8 << 30), "--log-level", "warn",
    ])
    remote = f"127.0.0.1:{remote_port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    manager = procs.start("manager", [
        str(VENV_BIN / "swarmd"), "manager", "--etcd-endpoints", etcd_url,
        "--listen-control", f"unix://{tmp / 'control.sock'}", "--listen-remote", remote,
        "--metrics-addr", f"127.0.0.1:{metrics_port}", "--leader-ttl", f"{args.leader_ttl}s",
    ], env=dict(os.environ, PYTHONASYNCIODEBUG="1") if args.asyncio_debug else None)
    per_proc = -(-args.nodes // args.hollow_procs)
    for i in range(args.hollow_procs):
        count = min(per_proc, args.nodes - i * per_proc)
        if count > 0:
            procs.start(f"hollow{i}", [
                str(VENV_BIN / "swarmd"), "hollow", "--manager", remote, "--nodes", str(count),
                "--name-prefix", f"hollow{i}", "--tick", str(args.tick), "--log-level", "info",
            ])
    sampler = Sampler(manager.pid)
    sampling = asyncio.create_task(sampler.run())
    async with grpc.aio.insecure_channel(remote, options=[("grpc.max_receive_message_length", 1 << 30)]) as channel:
        control = cgrpc.ControlStub(channel)
        for _ in range(100):
            try:
                await control.ListNodes(cpb.ListNodesRequest(), timeout=1)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)
        ready = await wait_nodes(control, args.nodes, timeout=300)
        print(f"{args.nodes} hollow nodes READY after {ready:.1f} s")
        prober = Prober(remote)
        probing = asyncio.create_task(prober.run())

        sizes = [args.tasks // args.services + (1 if i < args.tasks % args.services else 0) for i in range(args.services)]
        base = (await task_states(metrics_url))[ASSIGNED_TOTAL]
        if args.profile:
            procs.start("py-spy", [str(VENV_BIN / "py-spy"), "record", "--pid", str(manager.pid), "--rate", "50",
                                   "--format", "speedscope", "--output", args.profile, "--duration", str(int(args.timeout))])
        start = time.monotonic()
        services = []
        for i, replicas in enumerate(sizes):
            services.append((await control.CreateService(cpb.CreateServiceRequest(spec=spec(f"bench{i}", replicas)))).service)
        up, scheduled = await wait_running(metrics_url, args.tasks, start, args.timeout, base)

        start = time.monotonic()
        for svc in services:
            current = (await control.GetService(cpb.GetServiceRequest(service_id=svc.id))).service
            new = pb.ServiceSpec()
            new.CopyFrom(current.spec)
            new.replicated.replicas = 0
            await control.UpdateService(cpb.UpdateServiceRequest(service_id=svc.id, service_version=current.meta.version, spec=new))
        down = await wait_gone(metrics_url, start, args.timeout)
    sampling.cancel()
    probing.cancel()
    db = tmp / "etcd" / "member" / "snap" / "db"
    print()
    print(f"command: {' '.join(sys.argv)}")
    print(f"tasks {args.tasks} on {args.nodes} hollow nodes ({args.services} services, {args.hollow_procs} hollow processes), "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  all RUNNING after      {up:8.1f} s   ({args.tasks / up:,.0f} tasks/s end to end, creation to RUNNING)")
    print(f"  all ASSIGNED after     {scheduled:8.1f} s   ({args.tasks / scheduled:,.0f} scheduling decisions/s, creation included)")
    print(f"  scale to zero stopped  {down:8.1f} s")
    print(f"  manager peak RSS       {sampler.peak / 2**20:8.0f} MiB")
    print(f"  slowest health check   {prober.slowest:8.2f} s   ({prober.failed} failed; a fresh call's wait for the manager)")
    print(f"  etcd db size           {db.stat().st_size / 2**20:8.0f} MiB")
    print()
    print(REFERENCES)
    print(f"ratio to the 60 s goal (scaled to this size: {60 * args.tasks / 100_000:.1f} s): {up / (60 * args.tasks / 100_000):.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--services", type=int, default=10)
    p.add_argument("--hollow-procs", type=int, default=1, help="hollow processes to spread the nodes over")
    p.add_argument("--tick", type=float, default=0.25, help="hollow nodes' status report tick")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--leader-ttl", type=int, default=15,
                   help="the manager's leader lease TTL in seconds (default 15: on a loaded 2-core machine the "
                        "manager's event loop can lag past the 5 s default and flap leadership)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) for inspection")
    p.add_argument("--asyncio-debug", action="store_true", help="run the manager in asyncio debug mode (logs callbacks that block the loop > 100 ms)")
    p.add_argument("--profile", metavar="FILE", help="record the manager with py-spy during the scale-up (speedscope JSON)")
    args = p.parse_args()
    if shutil.which("etcd") is None:
        print("bench/scale.py: etcd is not installed (apt-get install etcd-server)", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so that the children are stopped and the directory removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-scale-"))
    procs = Processes(tmp)
    try:
        asyncio.run(bench(args, tmp, procs))
    finally:
        procs.stop()
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
