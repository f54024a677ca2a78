"""The Manager: the store, leader election, the gRPC servers, and — only while leader — the
reconcilers.

Every manager serves Control and Dispatcher (the state is in etcd, so any manager can answer).
Only the one holding the leader lease runs the reconcilers; when the lease is lost the store
first refuses guarded writes, then the reconcilers are cancelled.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flotilla.proto import control_pb2, control_pb2_grpc, dispatcher_pb2, dispatcher_pb2_grpc, logbroker_pb2
from flotilla.proto import logbroker_pb2_grpc as lgrpc
from flotilla.proto import objects_pb2 as pb

from . import metrics
from .logbroker import LogBroker
from .controlapi import Control
from .dispatcher import Dispatcher
from .leader import LeaderElection
from .reconcilers import reconcilers
from .rpc_thread import RpcThread, bridged
from .store import Op, Store, new_id

log = logging.getLogger(__name__)

DEFAULT_HISTORY = 5
DEFAULT_HEARTBEAT = 5.0
CONTROL = control_pb2.DESCRIPTOR.services_by_name["Control"]
DISPATCHER = dispatcher_pb2.DESCRIPTOR.services_by_name["Dispatcher"]
LOGS = logbroker_pb2.DESCRIPTOR.services_by_name["Logs"]
LOGBROKER = logbroker_pb2.DESCRIPTOR.services_by_name["LogBroker"]
SERVICES = (CONTROL.full_name, DISPATCHER.full_name, LOGS.full_name, LOGBROKER.full_name)


@dataclass
class ManagerConfig:
    """What `swarmd manager` is told on its command line."""

    etcd_endpoints: list[str]
    listen_remote: str
    listen_control: str = "unix:///run/flotilla/control.sock"
    metrics_addr: str = ""
    heartbeat_period: float | None = None
    leader_ttl: float = 5.0
    prefix: str = "/flotilla/v1/"
    manager_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{new_id()[:8]}")


def unix_path(addr: str) -> str:
    """The file path of a `unix://PATH` (or `unix:PATH`) address."""
    if addr.startswith("unix://"):
        return addr[len("unix://"):]
    if addr.startswith("unix:"):
        return addr[len("unix:"):]
    raise ValueError(f"control address {addr!r} must look like unix:///run/flotilla/control.sock")


def default_cluster() -> pb.Cluster:
    """The cluster object the first leader creates: SwarmKit's defaults."""
    cluster = pb.Cluster()
    cluster.spec.annotations.name = "default"
    cluster.spec.orchestration.task_history_retention_limit = DEFAULT_HISTORY
    cluster.spec.dispatcher.heartbeat_period.FromSeconds(int(DEFAULT_HEARTBEAT))
    return cluster


class Manager:
    """One manager process's worth of parts; `start`, then `stop`."""

    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.store = Store(config.etcd_endpoints, config.prefix)
        self.election = LeaderElection(self.store, config.manager_id, config.listen_remote, config.leader_ttl,
                                       on_elected=self._elected, on_lost=self._lost)
        self.dispatcher = Dispatcher(self.store, config.manager_id, config.listen_remote,
                                     heartbeat_period=config.heartbeat_period,
                                     is_leader=lambda: self.election.is_leader, managers=self.election.managers)
        self.control = Control(self.store)
        self.logbroker = LogBroker(self.store)
        self.server: grpc.aio.Server | None = None
        self._reconcilers: list[asyncio.Task] = []
        self._background: list[asyncio.Task] = []
        self._rpc = RpcThread()
        self._socket_path = unix_path(config.listen_control) if config.listen_control else ""

    async def start(self) -> None:
        await self.store.start()
        self._rpc.start()
        try:
            await self._rpc.run(self._serve(asyncio.get_running_loop()))
        except BaseException:
            if self.server is not None:
                await self._rpc.run(self.server.stop(grace=None))
            self._rpc.stop()
            await self.store.close()
            raise
        if self._socket_path:
            os.chmod(self._socket_path, 0o600)  # the control socket is root's, as Docker's is
        self.dispatcher.start()
        self._background = [asyncio.create_task(self.election.run(), name="leader-election"),
                            asyncio.create_task(self._gauges(), name="metrics-gauges"),
                            asyncio.create_task(self._loop_lag(), name="loop-lag")]
        if self.config.metrics_addr:
            from prometheus_client import start_http_server
            host, _, port = self.config.metrics_addr.rpartition(":")
            start_http_server(int(port), host or "0.0.0.0")
        log.info("manager %s serving on %s and %s", self.config.manager_id, self.config.listen_remote, self.config.listen_control)

    async def _serve(self, main: asyncio.AbstractEventLoop) -> None:
        """Build and start the gRPC server; runs on the server thread's loop (rpc_thread.py says why)."""
        self.server = grpc.aio.server(options=[("grpc.max_send_message_length", 256 << 20),
                                               ("grpc.max_receive_message_length", 16 << 20)])
        control_pb2_grpc.add_ControlServicer_to_server(bridged(self.control, CONTROL, main), self.server)
        dispatcher_pb2_grpc.add_DispatcherServicer_to_server(
            bridged(self.dispatcher, DISPATCHER, main, direct=frozenset({"Heartbeat"})), self.server)
        # `service logs` (manager/logbroker): both services of the broker, run on the main loop like the others
        lgrpc.add_LogsServicer_to_server(bridged(self.logbroker, LOGS, main), self.server)
        lgrpc.add_LogBrokerServicer_to_server(bridged(self.logbroker, LOGBROKER, main), self.server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        for name in ("", *SERVICES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection((*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        if self.server.add_insecure_port(self.config.listen_remote) == 0:
            raise OSError(f"cannot listen on {self.config.listen_remote}: address in use or invalid")
        if self._socket_path:
            os.makedirs(os.path.dirname(self._socket_path) or ".", exist_ok=True)
            if os.path.exists(self._socket_path):
                os.unlink(self._socket_path)  # left by a manager that was killed
            self.server.add_insecure_port(f"unix://{self._socket_path}")
        await self.server.start()

    async def stop(self) -> None:
        """Stop leading (and give the lease back), then stop serving."""
        for t in self._background:
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._lost()
        await self.dispatcher.stop()
        if self.server is not None:
            await self._rpc.run(self.server.stop(grace=1))
        self._rpc.stop()
        await self.store.close()
        if self._socket_path and os.path.exists(self._socket_path):
            os.unlink(self._socket_path)

    async def _elected(self) -> None:
        if not self.store.list("cluster"):
            result = (await self.store.batch([Op("create", "cluster", default_cluster())], leader_guard=True))[0]
            if isinstance(result, Exception):
                log.warning("creating the default cluster object: %s", result)
        for r in reconcilers(self.store):
            self._reconcilers.append(asyncio.create_task(self._run_reconciler(r), name=f"reconciler-{r.name}"))

    @staticmethod
    async def _run_reconciler(r) -> None:
        """A reconciler that crashes is restarted (it starts with a full pass)."""
        while True:
            try:
                await r.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep leading; the next pass repairs what failed
                log.exception("reconciler %s failed; restarting it", r.name)
                await asyncio.sleep(0.5)

    async def _lost(self) -> None:
        self.store.set_leader_guard(None)
        tasks, self._reconcilers = self._reconcilers, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _loop_lag() -> None:
        """Measure how long the event loop is blocked: heartbeats and keep-alives wait that long."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(0.25)
            lag = loop.time() - started - 0.25
            metrics.LOOP_LAG.observe(max(lag, 0.0))
            if lag > 1.0:
                log.warning("event loop was blocked for %.1fs", lag)

    async def _gauges(self) -> None:
        """Object counts for Prometheus, from the cache (never etcd)."""
        while True:
            by_state = self.store.task_state_counts()
            for name, number in pb.TaskState.items():
                metrics.TASKS.labels(name).set(by_state.get(number, 0))
            nodes = {name: 0 for name in pb.NodeStatus.State.keys()}
            for n in self.store.list("node"):
                nodes[pb.NodeStatus.State.Name(n.status.state)] += 1
            for name, n in nodes.items():
                metrics.NODES.labels(name).set(n)
            metrics.SERVICES.set(sum(1 for s in self.store.list("service") if not s.pending_delete))
            await asyncio.sleep(2)
