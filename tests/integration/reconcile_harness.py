"""A real manager (`swarmd manager` on a real etcd) with in-process hollow nodes, for the
reconciler integration tests: what a test drives and how it waits for convergence."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from flotilla.proto import control_pb2 as cpb
from flotilla.proto import control_pb2_grpc as cgrpc
from flotilla.proto import objects_pb2 as pb
from flotilla.swarmd.hollow import HollowCluster, HollowConfig

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
HEARTBEAT = 0.2  # seconds: a stopped hollow node is DOWN after ~3 periods


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Harness:
    """One manager process and any number of hollow node groups."""

    def __init__(self, etcd_endpoint: str, tmp: Path, unique: str) -> None:
        self.remote = f"127.0.0.1:{free_port()}"
        self.unique = unique
        self.log = tmp / "manager.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "swarmd"), "manager", "--etcd-endpoints", etcd_endpoint,
                 "--listen-control", f"unix://{tmp / 'control.sock'}", "--listen-remote", self.remote,
                 "--metrics-addr", f"127.0.0.1:{free_port()}", "--heartbeat-period", f"{HEARTBEAT}s"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.channel = grpc.aio.insecure_channel(self.remote)
        self.control = cgrpc.ControlStub(self.channel)
        self.hollows: list[HollowCluster] = []

    async def ready(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                if (await self.control.ListClusters(cpb.ListClustersRequest(), timeout=1)).clusters:
                    return
            except grpc.aio.AioRpcError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"manager did not start:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.1)

    def nodes(self, count: int, prefix: str = "h", **kw) -> HollowCluster:
        """Start `count` hollow nodes named `<prefix>-<unique>-<i>`."""
        cluster = HollowCluster(HollowConfig(manager=self.remote, name_prefix=f"{prefix}-{self.unique}", tick=0.05, **kw), count)
        cluster.start()
        self.hollows.append(cluster)
        return cluster

    async def close(self) -> None:
        for h in self.hollows:
            await h.close()
        await self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # -- reading --------------------------------------------------------------------------

    async def tasks(self, service_id: str | None = None) -> list[pb.Task]:
        req = cpb.ListTasksRequest(service_ids=[service_id] if service_id else [])
        return list((await self.control.ListTasks(req)).tasks)

    async def node_list(self) -> list[pb.Node]:
        return list((await self.control.ListNodes(cpb.ListNodesRequest())).nodes)

    async def wait(self, what: str, check: Callable, timeout: float = 20.0):
        """Poll the async `check` until it returns something truthy; fail with `what` otherwise."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await check()
            if last:
                return last
            await asyncio.sleep(0.1)
        tasks = await self.tasks()
        states = [(t.annotations.name, pb.TaskState.Name(t.status.state), pb.TaskState.Name(t.desired_state), t.node_id[:6], t.status.err) for t in tasks]
        raise AssertionError(f"timed out waiting for {what}; tasks: {states}")

    async def wait_nodes_ready(self, count: int) -> list[pb.Node]:
        async def check():
            nodes = [n for n in await self.node_list() if n.status.state == pb.NodeStatus.READY]
            return nodes if len(nodes) >= count else None
        return await self.wait(f"{count} READY nodes", check)

    async def running(self, service_id: str) -> list[pb.Task]:
        return [t for t in await self.tasks(service_id) if t.status.state == pb.RUNNING and t.desired_state == pb.RUNNING]

    async def wait_running(self, service_id: str, count: int, timeout: float = 20.0, avoid: set[str] = frozenset()) -> list[pb.Task]:
        """Wait until exactly `count` tasks of the service run, none on the `avoid` nodes, and
        no other task is desired to run."""
        async def check():
            tasks = await self.tasks(service_id)
            live = [t for t in tasks if t.desired_state <= pb.RUNNING]
            run = [t for t in live if t.status.state == pb.RUNNING and t.node_id not in avoid]
            return run if len(run) == count == len(live) else None
        return await self.wait(f"{count} running tasks", check, timeout)

    # -- writing --------------------------------------------------------------------------

    async def create(self, name: str, replicas: int | None = None, *, global_: bool = False, env=(), constraints=(),
                     cpus: float = 0, restart: pb.RestartPolicy | None = None, preferences=()) -> pb.Service:
        spec = pb.ServiceSpec()
        spec.annotations.name = f"{name}-{self.unique}"
        spec.task.container.image = "busybox:latest"
        spec.task.container.env.extend(env)
        spec.task.placement.constraints.extend(constraints)
        for p in preferences:
            spec.task.placement.preferences.add(spread_descriptor=p)
        spec.task.resources.reservations.nano_cpus = int(cpus * 1e9)
        if restart is not None:
            spec.task.restart.CopyFrom(restart)
        else:
            spec.task.restart.delay.FromMilliseconds(0)
        if global_:
            getattr(spec, "global").SetInParent()
        else:
            spec.replicated.replicas = replicas or 0
        return (await self.control.CreateService(cpb.CreateServiceRequest(spec=spec))).service

    async def scale(self, service: pb.Service, replicas: int) -> None:
        current = (await self.control.GetService(cpb.GetServiceRequest(service_id=service.id))).service
        spec = pb.ServiceSpec()
        spec.CopyFrom(current.spec)
        spec.replicated.replicas = replicas
        await self.control.UpdateService(cpb.UpdateServiceRequest(service_id=service.id, service_version=current.meta.version, spec=spec))

    async def set_availability(self, node: pb.Node, availability: int, labels: dict[str, str] | None = None) -> None:
        current = (await self.control.GetNode(cpb.GetNodeRequest(node_id=node.id))).node
        spec = pb.NodeSpec()
        spec.CopyFrom(current.spec)
        spec.availability = availability
        if labels:
            spec.annotations.labels.update(labels)
        await self.control.UpdateNode(cpb.UpdateNodeRequest(node_id=node.id, node_version=current.meta.version, spec=spec))


def leaked_processes(unique: str) -> list[str]:
    """Processes whose command line mentions this test's unique name (should be none)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if unique in cmd:
                found.append(cmd)
    return found
