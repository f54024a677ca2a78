"""The agent's session with the managers (SwarmKit's agent session).

One session at a time, with one of several managers: `Session` (the agent describes its node
and gets its node id), then, side by side until any of them fails, heartbeats at the period
the manager asks for, the Assignments stream (a COMPLETE set, then INCREMENTAL changes chained
by sequence number; a gap reopens the stream, which starts with a COMPLETE set again), batched
status reports, and the log broker's subscriptions. When the session breaks the agent moves
to the next manager address with exponential back-off. Task containers keep running
throughout: losing the managers is not a reason to stop anything.

The node id is kept in `<root>/agent/node-id`, so a restarted agent is the same node.
"""
from __future__ import annotations

import asyncio
import logging
import os
import platform
import random
import socket
from pathlib import Path

import grpc

from flotilla.proto import dispatcher_pb2 as dpb
from flotilla.proto import dispatcher_pb2_grpc as dgrpc
from flotilla.proto import objects_pb2 as pb
from flotilla.runtime.imaging.service import ImageService
from flotilla.runtime.runtime import Runtime

from .logs import LogPublisher
from .reporter import Reporter
from .worker import Worker

log = logging.getLogger("flotilla.agent.session")

MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0  # seconds between two attempts to open a session
CONNECT_TIMEOUT = 5.0  # seconds to get the first session message
DEFAULT_PERIOD = 5.0  # heartbeat period until the manager says otherwise
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.enable_retries", 0)]
ENGINE_VERSION = "flotilla-0.1.0"


class SessionEnded(Exception):
    """The manager closed the session or one of its streams."""


def parse_managers(text: str) -> list[str]:
    """`HOST:PORT[,HOST:PORT...]` into a list; a one-line error naming the bad entry."""
    addrs = [a.strip() for a in text.split(",") if a.strip()]
    if not addrs:
        raise ValueError("--manager needs at least one HOST:PORT")
    for a in addrs:
        host, sep, port = a.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"invalid manager address {a!r}: expected HOST:PORT, e.g. 127.0.0.1:2377")
    return addrs


def parse_labels(items: list[str]) -> dict[str, str]:
    """`--label k=v` flags into engine labels."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"invalid label {item!r}: expected key=value")
        labels[key.strip()] = value
    return labels


def total_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def describe_node(hostname: str, labels: dict[str, str]) -> pb.NodeDescription:
    """What the scheduler needs to know about this machine."""
    d = pb.NodeDescription(hostname=hostname, engine_version=ENGINE_VERSION)
    d.platform.os = platform.system().lower()
    d.platform.architecture = platform.machine()
    d.resources.nano_cpus = (os.cpu_count() or 1) * 1_000_000_000
    d.resources.memory_bytes = total_memory()
    d.engine_labels.update(labels)
    return d


class NodeIdentity:
    """The node id, kept on disk so that a restarted agent comes back as the same node."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / "node-id"
        try:
            self.node_id = self._path.read_text().strip()
        except FileNotFoundError:
            self.node_id = ""

    def set(self, node_id: str) -> None:
        if node_id == self.node_id:
            return
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(node_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self._path)
        self.node_id = node_id


class ClusterAgent:
    """Runs the node's share of the cluster: sessions, assignments, reports, log publishing."""

    def __init__(self, runtime: Runtime, state_dir: Path, managers: list[str], hostname: str = "",
                 labels: dict[str, str] | None = None, images: ImageService | None = None) -> None:
        self.runtime = runtime
        self.managers = list(managers)
        self.hostname = hostname or socket.gethostname()
        self.labels = dict(labels or {})
        self.identity = NodeIdentity(state_dir)
        self.reporter = Reporter()
        # tasks pull the image they need in Prepare, through the agent's one ImageService
        images = images if images is not None else runtime.image_service()
        self.worker = Worker(runtime, self.reporter, images)
        self.logs = LogPublisher(runtime, self.worker)
        self.session_id = ""
        self.manager = ""  # the address of the current session's manager
        self.connected = False
        self.sessions = 0  # sessions opened so far (for metrics)
        self._job: asyncio.Task | None = None

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    async def start(self) -> None:
        await self.worker.scan()
        self._job = asyncio.get_running_loop().create_task(self._run(), name="cluster session")

    async def close(self) -> None:
        """Stop talking to the managers; task containers keep running for the next agent."""
        if self._job is not None:
            self._job.cancel()
            await asyncio.gather(self._job, return_exceptions=True)
        self.logs.close()
        self.worker.close()

    async def _run(self) -> None:
        backoff = MIN_BACKOFF
        index = 0
        while True:
            addr = self.managers[index % len(self.managers)]
            opened = self.sessions
            try:
                await self._session(addr)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.warning("session with %s ended: %s %s", addr, exc.code().name, exc.details())
            except (SessionEnded, asyncio.TimeoutError, OSError) as exc:
                log.warning("session with %s ended: %s", addr, exc or type(exc).__name__)
            self.connected = False
            if self.sessions != opened:
                backoff = MIN_BACKOFF  # it worked for a while: retry soon, the same manager first
            else:
                index += 1  # that manager did not answer: the next one
                backoff = min(backoff * 2, MAX_BACKOFF)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))

    async def _session(self, addr: str) -> None:
        channel = grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS)
        call = None
        workers: list[asyncio.Task] = []
        try:
            stub = dgrpc.DispatcherStub(channel)
            call = stub.Session(dpb.SessionRequest(description=describe_node(self.hostname, self.labels),
                                                   node_id=self.node_id))
            first = await asyncio.wait_for(call.read(), CONNECT_TIMEOUT)
            if first is grpc.aio.EOF:
                raise SessionEnded("the manager closed the session at once")
            self.identity.set(first.node.id or self.node_id)
            self.worker.node_id = self.node_id
            self.session_id = first.session_id
            self._learn_managers(first.managers)
            self.manager, self.connected = addr, True
            self.sessions += 1
            log.info("session %s with %s: node %s (%s)", self.session_id, addr, self.node_id, self.hostname)
            self.reporter.resend_all()
            workers = [asyncio.ensure_future(c) for c in (
                self._heartbeat(stub), self._assignments(stub), self.reporter.run(self._sender(stub)),
                self._session_messages(call), self.logs.listen(channel, self.session_id, self.node_id),
            )]
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
            for w in done:
                w.result()
            raise SessionEnded("the session ended")
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if call is not None:
                call.cancel()
            await channel.close()

    def _learn_managers(self, managers) -> None:
        for m in managers:
            if m and m not in self.managers:
                self.managers.append(m)

    async def _session_messages(self, call) -> None:
        """Later session messages carry manager list updates; EOF ends the session."""
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                raise SessionEnded("the manager closed the session")
            self._learn_managers(msg.managers)

    async def _heartbeat(self, stub: dgrpc.DispatcherStub) -> None:
        period = DEFAULT_PERIOD
        while True:
            resp = await stub.Heartbeat(dpb.HeartbeatRequest(session_id=self.session_id), timeout=max(1.0, period * 2))
            period = resp.period.ToNanoseconds() / 1e9 or DEFAULT_PERIOD
            await asyncio.sleep(period / 2)  # well inside the period, as SwarmKit's agent does

    async def _assignments(self, stub: dgrpc.DispatcherStub) -> None:
        while True:
            call = stub.Assignments(dpb.AssignmentsRequest(session_id=self.session_id))
            sequence = None
            try:
                async for msg in call:
                    if msg.type == dpb.AssignmentsMessage.COMPLETE:
                        self.worker.apply_complete(c.task for c in msg.changes
                                                   if c.action == dpb.AssignmentChange.UPDATE)
                    elif sequence is None or msg.applies_to != sequence:
                        log.warning("assignments: gap (expected %s, got %s): resyncing", sequence, msg.applies_to)
                        break
                    else:
                        self.worker.apply_changes(msg.changes)
                    sequence = msg.results_in
                else:
                    raise SessionEnded("the manager closed the assignments stream")
            finally:
                call.cancel()

    def _sender(self, stub: dgrpc.DispatcherStub):
        async def send(updates: list[dpb.TaskStatusUpdate]) -> None:
            await stub.UpdateTaskStatus(dpb.UpdateTaskStatusRequest(session_id=self.session_id, updates=updates),
                                        timeout=10)
        return send
