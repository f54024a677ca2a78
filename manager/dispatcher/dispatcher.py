"""The Dispatcher gRPC service: agent sessions, heartbeats, assignments and status reports.

The dispatcher only records what agents say (node up/down, task status); it never decides
what runs where. Every manager runs one; the leader additionally marks DOWN the nodes whose
session was held by a manager that is gone (its registration lease expired) and that did not
reconnect elsewhere within three heartbeat periods.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import grpc

from flotilla.proto import dispatcher_pb2 as dpb
from flotilla.proto import dispatcher_pb2_grpc as dgrpc
from flotilla.proto import objects_pb2 as pb

from .. import metrics
from ..store import Conflict, Op, Store, new_id
from .assignments import Assignments
from .status import StatusWriter

log = logging.getLogger(__name__)

DEFAULT_PERIOD = 5.0
MISSED_HEARTBEATS = 3  # a node is DOWN after this many periods without a heartbeat


class _Session:
    __slots__ = ("id", "node_id", "closed")

    def __init__(self, node_id: str) -> None:
        self.id = new_id()
        self.node_id = node_id
        self.closed = asyncio.Event()


class Dispatcher(dgrpc.DispatcherServicer):
    """See the module docstring."""

    def __init__(self, store: Store, manager_id: str, addr: str, *, heartbeat_period: float | None = None,
                 is_leader: Callable[[], bool] = lambda: False,
                 managers: Callable[[], Awaitable[dict[str, str]]] | None = None, batch_interval: float = 0.05) -> None:
        self.store = store
        self.manager_id = manager_id
        self.addr = addr
        self.period_override = heartbeat_period
        self.is_leader = is_leader
        self._managers = managers
        self.sessions: dict[str, _Session] = {}
        self.node_session: dict[str, _Session] = {}
        # Nodes this manager serves (or served) -> monotonic time. Heartbeat runs on the gRPC
        # server's thread (manager/rpc_thread.py), the rest on the main loop: hence the lock.
        self.last_seen: dict[str, float] = {}
        self._seen_lock = threading.Lock()
        self._period = heartbeat_period or DEFAULT_PERIOD  # what Heartbeat answers; refreshed by the expiry loop
        self._orphans: dict[str, float] = {}
        self.assignments = Assignments(store, batch_interval)
        self.statuses = StatusWriter(store, batch_interval)
        self._tasks: list[asyncio.Task] = []

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(c, name=n) for c, n in (
            (self.assignments.run(), "dispatcher-assignments"), (self.statuses.run(), "dispatcher-status"),
            (self._expire_loop(), "dispatcher-expiry"), (self._follow_removals(), "dispatcher-removals"))]

    async def stop(self) -> None:
        for s in list(self.sessions.values()):
            s.closed.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def period(self) -> float:
        """The heartbeat period: the flag, else the cluster object's, else 5 s."""
        if self.period_override:
            return self.period_override
        for cluster in self.store.list("cluster"):
            d = cluster.spec.dispatcher.heartbeat_period
            if d.seconds or d.nanos:
                return d.ToNanoseconds() / 1e9
        return DEFAULT_PERIOD

    # -- RPCs ---------------------------------------------------------------------------------

    async def Session(self, request: dpb.SessionRequest, context: grpc.aio.ServicerContext):
        node_id = request.node_id or new_id()
        try:
            node = await self._set_node(node_id, request, pb.NodeStatus.READY, "")
        except Conflict as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"registering node {node_id}: {e}; retry")
        previous = self.node_session.pop(node_id, None)
        if previous is not None:
            self._close(previous)
        session = _Session(node_id)
        self.sessions[session.id] = session
        self.node_session[node_id] = session
        self._seen(node_id)
        self._orphans.pop(node_id, None)
        metrics.SESSIONS.set(len(self.sessions))
        managers = list((await self._managers()).values()) if self._managers else [self.addr]
        log.info("dispatcher: session %s for node %s (%s)", session.id, node_id, request.description.hostname)
        try:
            yield dpb.SessionMessage(session_id=session.id, node=node, managers=managers)
            await session.closed.wait()
        finally:
            if self.sessions.get(session.id) is session:
                self._close(session)

    async def Heartbeat(self, request: dpb.HeartbeatRequest, context: grpc.aio.ServicerContext) -> dpb.HeartbeatResponse:
        """Runs on the gRPC server's own loop, never waiting for the main loop, so that bulk work
        there cannot make a live node look dead. Touches only the session table (read) and
        `last_seen` (under its lock)."""
        session = await self._session(request.session_id, context)
        self._seen(session.node_id)
        metrics.HEARTBEATS.inc()
        resp = dpb.HeartbeatResponse()
        resp.period.FromNanoseconds(int(self._period * 1e9))
        return resp

    async def UpdateTaskStatus(self, request: dpb.UpdateTaskStatusRequest, context: grpc.aio.ServicerContext) -> dpb.UpdateTaskStatusResponse:
        session = await self._session(request.session_id, context)
        self._seen(session.node_id)  # any call proves the node alive
        try:
            await self.statuses.submit(session.node_id, request.updates)
        except Exception as e:  # noqa: BLE001 - one line for the agent, which retries
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"task statuses not written: {e}")
        return dpb.UpdateTaskStatusResponse()

    async def Assignments(self, request: dpb.AssignmentsRequest, context: grpc.aio.ServicerContext):
        session = await self._session(request.session_id, context)
        async for msg in self.assignments.serve(session.node_id, lambda: not session.closed.is_set()):
            yield msg

    # -- helpers ------------------------------------------------------------------------------

    def _seen(self, node_id: str, at: float | None = None) -> None:
        with self._seen_lock:
            self.last_seen[node_id] = time.monotonic() if at is None else at

    async def _session(self, session_id: str, context: grpc.aio.ServicerContext) -> _Session:
        session = self.sessions.get(session_id)
        if session is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"session {session_id!r} is unknown or expired: open a new session")
        return session

    def _close(self, session: _Session) -> None:
        session.closed.set()
        self.sessions.pop(session.id, None)
        if self.node_session.get(session.node_id) is session:
            del self.node_session[session.node_id]
            self.assignments.close_node(session.node_id)
        metrics.SESSIONS.set(len(self.sessions))

    async def _set_node(self, node_id: str, request: dpb.SessionRequest | None, state: int, message: str) -> pb.Node:
        """Write the node's status (and description on registration), retrying on conflicts."""
        for attempt in range(10):
            current = self.store.get("node", node_id)
            node = pb.Node()
            if current is not None:
                node.CopyFrom(current)
            else:
                node.id = node_id
            if request is not None:
                node.description.CopyFrom(request.description)
                node.status.addr = request.addr
                node.status.manager_id = self.manager_id
            node.status.state = state
            node.status.message = message
            try:
                if current is None:
                    return await self.store.create("node", node)
                return await self.store.update("node", node)
            except Conflict:
                await asyncio.sleep(0.02 * (attempt + 1))  # the watch brings the newer version
        raise Conflict(f"node {node_id} keeps changing")

    async def _follow_removals(self) -> None:
        """End the session of a node removed from the cluster (`node rm --force` of a live node):
        its agent then opens a new session and the node joins again, as a fresh object."""
        queue = self.store.subscribe({"node"})
        try:
            while True:
                event = await queue.get()
                if event.action == "delete":
                    with self._seen_lock:
                        self.last_seen.pop(event.obj.id, None)
                    session = self.node_session.get(event.obj.id)
                    if session is not None:
                        self._close(session)
        finally:
            self.store.unsubscribe(queue)

    async def _expire_loop(self) -> None:
        """Mark DOWN the nodes whose heartbeats stopped (and, when leader, orphaned nodes)."""
        while True:
            period = self._period = self.period()
            started = time.monotonic()
            await asyncio.sleep(period / 4)
            lag = time.monotonic() - started - period / 4
            if lag > period / 4:
                # The event loop was busy: heartbeats that arrived meanwhile are still queued.
                # Do not count the stall against the nodes.
                with self._seen_lock:
                    for node_id in self.last_seen:
                        self.last_seen[node_id] += lag
                for node_id in self._orphans:
                    self._orphans[node_id] += lag
            try:
                await self._expire(period)
            except Exception as e:  # noqa: BLE001 - etcd away: try again next round
                log.warning("dispatcher: expiring sessions failed: %s", e)

    async def _expire(self, period: float) -> None:
        now = time.monotonic()
        with self._seen_lock:
            expired = [n for n, seen in self.last_seen.items() if now - seen > MISSED_HEARTBEATS * period]
            for node_id in expired:
                del self.last_seen[node_id]
        for node_id in expired:
            session = self.node_session.get(node_id)
            if session is not None:
                self._close(session)
        if self.is_leader() and self._managers is not None:
            expired += await self._orphaned(now, period)
        if expired:
            await self._mark_down(expired, "heartbeat failure")

    async def _orphaned(self, now: float, period: float) -> list[str]:
        try:
            live = set(await self._managers())
        except grpc.aio.AioRpcError:
            return []
        found = []
        for node in self.store.list("node"):
            if node.status.state != pb.NodeStatus.READY or node.status.manager_id in live or node.id in self.last_seen:
                self._orphans.pop(node.id, None)
                continue
            since = self._orphans.setdefault(node.id, now)
            if now - since > MISSED_HEARTBEATS * period:
                del self._orphans[node.id]
                found.append(node.id)
        return found

    async def _mark_down(self, node_ids: list[str], message: str) -> None:
        ops = []
        for node_id in node_ids:
            node = self.store.get("node", node_id)
            if node is None or node.status.state == pb.NodeStatus.DOWN:
                continue
            n = pb.Node()
            n.CopyFrom(node)
            n.status.state = pb.NodeStatus.DOWN
            n.status.message = message
            ops.append(Op("update", "node", n))
        if not ops:
            return
        for op, r in zip(ops, await self.store.batch(ops)):
            if isinstance(r, Exception):
                log.info("dispatcher: marking node %s down: %s (retrying)", op.obj.id, r)
                self._seen(op.obj.id, time.monotonic() - MISSED_HEARTBEATS * self.period())
            else:
                log.info("dispatcher: node %s is DOWN (%s)", op.obj.id, message)
