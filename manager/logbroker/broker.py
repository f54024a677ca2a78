"""The manager's log broker (SwarmKit's): `service logs` without the manager ever reading a log.

A subscriber (`swarmctl service logs`) calls `Logs.SubscribeLogs` with a service or task. The
broker resolves it to tasks from the store's cache, groups them by node, and sends each
node's agent a `SubscriptionMessage` over the `ListenSubscriptions` stream that agent keeps
open. Agents answer with a `PublishLogs` stream per subscription, ending it with `close`;
the broker fills in task and node names and forwards the lines to the subscriber, which ends
when every agent involved has closed (without follow: all logs read; with follow on a task:
its container stopped) or when the subscriber goes away (then the agents are told to stop).
With follow on a service, the broker also watches the store: a task of the service that starts
running later is asked for from its node (all its lines), and the subscription lasts until the
service is removed, as Docker's `service logs -f` does.

Every manager runs a broker (it serves whoever is connected to it): an agent listens on the
manager it has its session with, so a subscriber on another manager would miss that node's
logs; the subscriber is told so in `warnings`, never silently.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field

import grpc

from flotilla.proto import logbroker_pb2 as lpb
from flotilla.proto import logbroker_pb2_grpc as lgrpc
from flotilla.proto import objects_pb2 as pb

log = logging.getLogger("flotilla.manager.logbroker")
_CLOSED = object()
_WAKE = object()  # a warning is waiting to be sent


@dataclass
class _Subscription:
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    pending: int = 0  # agents that have not closed yet


def task_display_name(task: pb.Task) -> str:
    """`SERVICE.SLOT.TASKID` with the id cut to 12 characters, as Docker's log prefix shows it."""
    name = task.annotations.name or f"{task.service_annotations.name or task.service_id}.{task.slot or task.node_id}"
    return f"{name}.{task.id[:12]}"


class LogBroker(lgrpc.LogsServicer, lgrpc.LogBrokerServicer):
    """Routes subscriptions to agents and their lines back to subscribers."""

    def __init__(self, store) -> None:
        self._store = store
        self._agents: dict[str, asyncio.Queue] = {}  # node id -> its ListenSubscriptions stream
        self._subs: dict[str, _Subscription] = {}

    # -- agents ------------------------------------------------------------------------
    async def ListenSubscriptions(self, request: lpb.ListenSubscriptionsRequest, context):
        if not request.node_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ListenSubscriptions needs the agent's node_id")
        queue: asyncio.Queue = asyncio.Queue()
        self._agents[request.node_id] = queue  # a reconnecting agent replaces its old stream
        try:
            while True:
                yield await queue.get()
        finally:
            if self._agents.get(request.node_id) is queue:
                del self._agents[request.node_id]

    async def PublishLogs(self, request_iterator, context) -> lpb.PublishLogsResponse:
        async for msg in request_iterator:
            sub = self._subs.get(msg.subscription_id)
            if sub is None:
                break  # the subscriber is gone: ending the stream tells the agent to stop
            if msg.messages:
                await sub.queue.put(list(msg.messages))
            if msg.close:
                await sub.queue.put(_CLOSED)
                break
        return lpb.PublishLogsResponse()

    # -- subscribers -------------------------------------------------------------------
    def _resolve(self, target: str) -> tuple[str, list[pb.Task]]:
        """(service id or "" for a task target, the tasks)."""
        from flotilla.manager.store import NotFound
        try:
            service = self._store.find("service", target)
        except NotFound:
            return "", [self._store.find("task", target)]
        return service.id, list(self._store.tasks_of_service(service.id))

    async def SubscribeLogs(self, request: lpb.SubscribeLogsRequest, context):
        from flotilla.manager.store import InvalidArgument, NotFound
        try:
            service_id, tasks = self._resolve(request.target)
        except NotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such service or task: {request.target}")
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        follow_new = bool(service_id) and request.options.follow
        sub_id = os.urandom(12).hex()
        sub = _Subscription()
        names: dict[str, str] = {}
        hostnames: dict[str, str] = {}
        asked: list[tuple[str, str]] = []  # (node id, id of the subscription sent to it)
        warnings: list[str] = []

        def ask(node_tasks: list[pb.Task], options: lpb.LogSubscriptionOptions) -> None:
            """Send one node's agent a subscription for these tasks (one id per message, so a
            node asked again for a new task starts a second reader rather than being ignored)."""
            node_id = node_tasks[0].node_id
            node = self._store.get("node", node_id)
            hostnames[node_id] = node.description.hostname if node is not None else node_id
            names.update((t.id, task_display_name(t)) for t in node_tasks)
            queue = self._agents.get(node_id)
            if queue is None:
                warnings.append(f"node {hostnames[node_id]} is not connected to this manager: "
                                f"the logs of {len(node_tasks)} task(s) are missing")
                return
            child = f"{sub_id}.{len(asked)}"
            self._subs[child] = sub
            queue.put_nowait(lpb.SubscriptionMessage(id=child, task_ids=[t.id for t in node_tasks], options=options))
            sub.pending += 1
            asked.append((node_id, child))

        # With follow on a service, tasks whose container may not exist yet are asked for once
        # they run, and so are tasks started later (Docker's `service logs -f` follows them).
        events = self._store.subscribe({"task", "service"}) if follow_new else None
        by_node: dict[str, list[pb.Task]] = defaultdict(list)
        for t in tasks:
            ready = t.status.state >= (pb.RUNNING if follow_new else pb.ASSIGNED)
            if t.node_id and ready:
                by_node[t.node_id].append(t)
        for node_tasks in by_node.values():
            ask(node_tasks, request.options)
        watcher = None
        if events is not None:
            seen = {t.id for ts in by_node.values() for t in ts}
            sub.pending += 1  # the watcher's own share: the subscription lasts while the service does
            new_options = lpb.LogSubscriptionOptions(follow=True, tail=-1)  # a new task: all its lines
            watcher = asyncio.ensure_future(self._watch_new_tasks(events, service_id, seen, sub, warnings,
                                                                  lambda t: ask([t], new_options)))
        try:
            while sub.pending:
                if warnings:
                    yield lpb.SubscribeLogsMessage(warnings=warnings[:])
                    warnings.clear()
                item = await sub.queue.get()
                if item is _CLOSED:
                    sub.pending -= 1
                    continue
                if item is _WAKE:
                    continue
                for m in item:
                    m.context.task_name = names.get(m.context.task_id, m.context.task_id)
                    m.context.node_name = hostnames.get(m.context.node_id, m.context.node_id)
                yield lpb.SubscribeLogsMessage(messages=item)
        finally:
            if watcher is not None:
                watcher.cancel()
                self._store.unsubscribe(events)
            for node_id, child in asked:
                del self._subs[child]
                queue = self._agents.get(node_id)
                if queue is not None and sub.pending:
                    queue.put_nowait(lpb.SubscriptionMessage(id=child, close=True))

    @staticmethod
    async def _watch_new_tasks(events: asyncio.Queue, service_id: str, seen: set[str], sub: _Subscription,
                               warnings: list[str], ask) -> None:
        """Ask for every task of the service that starts running; close the watcher's share of
        the subscription when the service is removed."""
        while True:
            event = await events.get()
            obj = event.obj
            if event.kind == "service":
                if obj.id == service_id and (event.action == "delete" or obj.pending_delete):
                    await sub.queue.put(_CLOSED)
                    return
                continue
            if (obj.service_id != service_id or event.action == "delete" or obj.id in seen or not obj.node_id
                    or obj.status.state < pb.RUNNING):
                continue
            seen.add(obj.id)
            ask(obj)
            if warnings:
                await sub.queue.put(_WAKE)  # let the subscriber loop send them now
