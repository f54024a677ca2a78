"""Hollow nodes: many simulated agents in one asyncio process, speaking the real Dispatcher
protocol (like Kubernetes' kubemark), so that the manager can be tested and benchmarked at
scale without containers.

Each hollow node opens a Session, heartbeats at the period the manager asks for, follows its
Assignments stream (a COMPLETE set, then INCREMENTAL changes chained by sequence number; a gap
reopens the stream) and walks every assigned task through ACCEPTED, PREPARING, READY,
STARTING and RUNNING, one state per `step` seconds, and to SHUTDOWN when its desired state
says so. Like SwarmKit's agent reporter, each node sends at most one UpdateTaskStatus per tick
with the latest status of every task that changed (states a task passed within one tick are
coalesced).

Tasks can be told to misbehave through their container env, so restart policies can be tested:
`HOLLOW_EXIT=<code>` makes the task end one step after RUNNING (COMPLETE for 0, FAILED with
that exit code otherwise); `HOLLOW_REJECT=1` makes it REJECTED while preparing.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import grpc

from flotilla.proto import dispatcher_pb2 as dpb
from flotilla.proto import dispatcher_pb2_grpc as dgrpc
from flotilla.proto import objects_pb2 as pb

log = logging.getLogger(__name__)

# The walk of a task that starts normally.
WALK = (pb.ACCEPTED, pb.PREPARING, pb.READY, pb.STARTING, pb.RUNNING)
NODES_PER_CHANNEL = 100  # hollow nodes sharing one HTTP/2 connection


@dataclass
class HollowConfig:
    """What every hollow node of one process looks like."""

    manager: str
    cpus: float = 4.0
    memory: int = 8 << 30
    labels: dict[str, str] = field(default_factory=dict)
    name_prefix: str = "hollow"
    tick: float = 0.1  # how often status changes are sent
    step: float = 0.0  # time between two states of the walk (0: straight to RUNNING)


@dataclass
class _TaskSim:
    task: pb.Task
    state: int = pb.ASSIGNED
    next_at: float = 0.0
    exit_code: int = 0
    reported: int = -1  # the state last sent to the manager

    exits: bool = False  # HOLLOW_EXIT is set: the task ends one step after RUNNING
    rejects: bool = False  # HOLLOW_REJECT=1

    def __post_init__(self) -> None:
        # Read once: a task's spec never changes, and this runs for every task of every node.
        env = dict(item.partition("=")[::2] for item in self.task.spec.container.env if item.startswith("HOLLOW_"))
        code = env.get("HOLLOW_EXIT")
        self.exits = code is not None
        self.exit_code = int(code) if code and code.lstrip("-").isdigit() else 0
        self.rejects = env.get("HOLLOW_REJECT") == "1"


class HollowNode:
    """One simulated agent."""

    def __init__(self, config: HollowConfig, index: int, channel: grpc.aio.Channel) -> None:
        self.config = config
        self.hostname = f"{config.name_prefix}-{index}"
        self.node_id = ""
        self.stub = dgrpc.DispatcherStub(channel)
        self.tasks: dict[str, _TaskSim] = {}
        self._active: set[str] = set()  # tasks that may still change or must be reported
        self.session_id = ""
        self._task: asyncio.Task | None = None

    def description(self) -> pb.NodeDescription:
        d = pb.NodeDescription(hostname=self.hostname, engine_version="hollow")
        d.platform.os = "linux"
        d.platform.architecture = "x86_64"
        d.resources.nano_cpus = int(self.config.cpus * 1e9)
        d.resources.memory_bytes = self.config.memory
        d.engine_labels.update(self.config.labels)
        return d

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"hollow {self.hostname}")

    async def stop(self) -> None:
        """Vanish without a word (as a crashed host would): the manager must notice by heartbeats."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                log.info("%s: session ended: %s %s", self.hostname, e.code().name, e.details())
            except Exception:  # keep simulating: one node's surprise must not stop the others
                log.exception("%s: session failed", self.hostname)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _session(self) -> None:
        call = self.stub.Session(dpb.SessionRequest(description=self.description(), node_id=self.node_id))
        first = await call.read()
        if first is grpc.aio.EOF:
            return
        self.session_id, self.node_id = first.session_id, first.node.id
        for sim in self.tasks.values():
            sim.reported = -1  # a new session: tell the manager everything again
        self._active = set(self.tasks)
        workers = [
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._assignments()),
            asyncio.create_task(self._report()),
            asyncio.create_task(self._drain(call)),
        ]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
            for w in done:
                w.result()  # raise what ended the session
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            call.cancel()

    async def _drain(self, call) -> None:
        """Read later session messages (manager list updates) until the session ends."""
        while await call.read() is not grpc.aio.EOF:
            pass

    async def _heartbeat(self) -> None:
        while True:
            resp = await self.stub.Heartbeat(dpb.HeartbeatRequest(session_id=self.session_id))
            period = resp.period.ToNanoseconds() / 1e9 or 5.0
            await asyncio.sleep(period / 2)  # well inside the period, as SwarmKit's agent does

    async def _assignments(self) -> None:
        call = self.stub.Assignments(dpb.AssignmentsRequest(session_id=self.session_id))
        sequence = None
        try:
            async for msg in call:
                if msg.type == dpb.AssignmentsMessage.COMPLETE:
                    wanted = {c.task.id for c in msg.changes if c.action == dpb.AssignmentChange.UPDATE}
                    for tid in list(self.tasks):
                        if tid not in wanted:
                            del self.tasks[tid]
                            self._active.discard(tid)
                elif sequence is None or msg.applies_to != sequence:
                    return  # a gap: the session loop reopens everything with a COMPLETE set
                sequence = msg.results_in
                for change in msg.changes:
                    if change.action == dpb.AssignmentChange.REMOVE:
                        self.tasks.pop(change.task.id, None)
                        self._active.discard(change.task.id)
                    else:
                        self._assign(change.task)
        finally:
            call.cancel()

    def _assign(self, task: pb.Task) -> None:
        sim = self.tasks.get(task.id)
        if sim is None:
            self.tasks[task.id] = _TaskSim(task, state=max(task.status.state, pb.ASSIGNED), next_at=time.monotonic())
        else:
            sim.task = task
        self._active.add(task.id)

    def _advance(self, sim: _TaskSim, now: float) -> None:
        """Move a task along its walk as far as the clock allows."""
        while now >= sim.next_at:
            if sim.task.desired_state > pb.RUNNING and sim.state <= pb.RUNNING:
                sim.state = pb.SHUTDOWN
                return
            if sim.state < pb.RUNNING:
                if sim.state >= pb.ACCEPTED and sim.state < pb.READY and sim.rejects:
                    sim.state = pb.REJECTED
                    return
                sim.state = next(s for s in WALK if s > sim.state)
            elif sim.state == pb.RUNNING and sim.exits:
                sim.state = pb.COMPLETE if sim.exit_code == 0 else pb.FAILED
                return
            else:
                return
            sim.next_at += self.config.step
            if self.config.step == 0 and sim.state == pb.RUNNING and sim.exits:
                sim.next_at = now + self.config.tick  # let RUNNING be seen before the exit
                return

    def _status(self, sim: _TaskSim) -> pb.TaskStatus:
        s = pb.TaskStatus(state=sim.state, message=pb.TaskState.Name(sim.state).lower())
        s.timestamp.GetCurrentTime()
        s.container_status.container_id = f"hollow-{sim.task.id}"
        if sim.state == pb.FAILED:
            s.err = f"task: non-zero exit ({sim.exit_code})"
            s.container_status.exit_code = sim.exit_code
        elif sim.state == pb.REJECTED:
            s.err = "hollow: rejected as the task asked (HOLLOW_REJECT=1)"
        return s

    def _steady(self, sim: _TaskSim) -> bool:
        """Nothing will happen to this task until the manager changes it."""
        if sim.reported != sim.state:
            return False
        if sim.state > pb.RUNNING:
            return True
        return sim.state == pb.RUNNING and sim.task.desired_state <= pb.RUNNING and not sim.exits

    async def _report(self) -> None:
        while True:
            now = time.monotonic()
            updates = []
            for tid in list(self._active):
                sim = self.tasks.get(tid)
                if sim is None:
                    self._active.discard(tid)
                    continue
                self._advance(sim, now)
                if sim.state != sim.reported:
                    updates.append(dpb.TaskStatusUpdate(task_id=tid, status=self._status(sim)))
            if updates:
                await self.stub.UpdateTaskStatus(dpb.UpdateTaskStatusRequest(session_id=self.session_id, updates=updates))
                for u in updates:
                    sim = self.tasks.get(u.task_id)
                    if sim is not None:
                        sim.reported = max(sim.reported, u.status.state)
            for tid in list(self._active):
                sim = self.tasks.get(tid)
                if sim is None or self._steady(sim):
                    self._active.discard(tid)
            await asyncio.sleep(self.config.tick)


class HollowCluster:
    """N hollow nodes sharing a few gRPC connections to one manager."""

    def __init__(self, config: HollowConfig, count: int) -> None:
        self.config = config
        self._channels = [
            # A distinct channel argument per group gives each group its own connection.
            grpc.aio.insecure_channel(config.manager, options=[("flotilla.hollow.group", i), ("grpc.max_receive_message_length", 64 << 20)])
            for i in range((count + NODES_PER_CHANNEL - 1) // NODES_PER_CHANNEL)
        ]
        self.nodes = [HollowNode(config, i, self._channels[i // NODES_PER_CHANNEL]) for i in range(count)]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    async def close(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes))
        await asyncio.gather(*(c.close() for c in self._channels))

    def running(self) -> int:
        """Tasks currently RUNNING across all hollow nodes (for progress output)."""
        return sum(1 for n in self.nodes for s in n.tasks.values() if s.state == pb.RUNNING)
