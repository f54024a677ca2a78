"""The reconcilers against the real store on a real etcd, without a dispatcher: the test
plays the agents' part by writing task statuses, so each reconciler step can be checked,
including a leader change in the middle of a scale-up."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from flotilla.manager.orchestrator.reconciler import Orchestrator
from flotilla.manager.scheduler.scheduler import Scheduler
from flotilla.manager.store import Op, Store
from flotilla.proto import objects_pb2 as pb

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(120)]


def _node(name: str, cpus: int = 4) -> pb.Node:
    n = pb.Node()
    n.description.hostname = name
    n.description.platform.os = "linux"
    n.description.platform.architecture = "x86_64"
    n.description.resources.nano_cpus = cpus * 10**9
    n.description.resources.memory_bytes = 8 << 30
    n.status.state = pb.NodeStatus.READY
    return n


def _service(name: str, replicas: int) -> pb.Service:
    s = pb.Service()
    s.spec.annotations.name = name
    s.spec.task.container.image = "busybox"
    s.spec.task.restart.delay.FromMilliseconds(0)
    s.spec.replicated.replicas = replicas
    s.spec_version.index = 1
    return s


class Leader:
    """The reconcilers of one (simulated) leader term, on their own store connection."""

    def __init__(self, endpoint: str) -> None:
        self.store = Store([endpoint])
        self.runs: list[asyncio.Task] = []

    async def start(self) -> Leader:
        await self.store.start()
        scheduler = Scheduler(self.store, self.store.batch)
        for r in (Orchestrator(self.store, self.store.batch, scheduler=scheduler), scheduler):
            self.runs.append(asyncio.create_task(r.run()))
        return self

    async def stop(self) -> None:
        for t in self.runs:
            t.cancel()
        await asyncio.gather(*self.runs, return_exceptions=True)
        await self.store.close()


async def until(check, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = check()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def report(store: Store, tasks: list[pb.Task], state: int) -> None:
    """What the dispatcher writes when agents report `state` for these tasks."""
    ops = []
    for t in tasks:
        u = pb.Task()
        u.CopyFrom(t)
        u.status.state = state
        u.status.timestamp.GetCurrentTime()
        ops.append(Op("update", "task", u))
    assert not [r for r in await store.batch(ops) if isinstance(r, Exception)]


def live(store: Store, sid: str) -> list[pb.Task]:
    return [t for t in store.tasks_of_service(sid) if t.desired_state <= pb.RUNNING]


def test_scale_up_survives_a_leader_change_and_nodes_going_down(etcd_endpoint):
    async def main():
        admin = Store([etcd_endpoint])
        await admin.start()
        first = second = None
        try:
            nodes = [await admin.create("node", _node(f"n{i}")) for i in range(3)]
            first = await Leader(etcd_endpoint).start()
            svc = await admin.create("service", _service("web", 300))
            # The first leader dies somewhere in the middle of the scale-up.
            await until(lambda: len(admin.tasks_of_service(svc.id)) > 0)
            await first.stop()
            second = await Leader(etcd_endpoint).start()

            def assigned():
                ts = live(admin, svc.id)
                return ts if len(ts) == 300 and all(t.status.state == pb.ASSIGNED for t in ts) else None
            tasks = await until(assigned)
            assert sorted(t.slot for t in tasks) == list(range(1, 301))  # every slot once, none twice
            assert set(Counter(t.node_id for t in tasks).values()) == {100}
            await report(admin, tasks, pb.RUNNING)

            # A node goes DOWN: its tasks are replaced elsewhere, in their slots.
            down = pb.Node()
            down.CopyFrom(admin.get("node", nodes[0].id))
            down.status.state = pb.NodeStatus.DOWN
            await admin.update("node", down)

            def moved():
                ts = live(admin, svc.id)
                return ts if len(ts) == 300 and all(t.node_id and t.node_id != down.id for t in ts) else None
            tasks = await until(moved)
            assert sorted(t.slot for t in tasks) == list(range(1, 301))
            old = [t for t in admin.tasks_of_node(down.id)]
            assert len(old) == 100 and {t.desired_state for t in old} == {pb.SHUTDOWN}
        finally:
            for leader in (first, second):
                if leader is not None:
                    await leader.stop()
            await admin.close()
    asyncio.run(main())


def test_scale_down_removes_and_reaper_deletes(etcd_endpoint):
    async def main():
        admin = Store([etcd_endpoint])
        await admin.start()
        leader = None
        try:
            for i in range(2):
                await admin.create("node", _node(f"n{i}"))
            leader = await Leader(etcd_endpoint).start()
            svc = await admin.create("service", _service("web", 4))
            tasks = await until(lambda: (ts := live(admin, svc.id)) and len(ts) == 4 and all(t.node_id for t in ts) and ts)
            await report(admin, tasks, pb.RUNNING)
            await until(lambda: all(t.status.state == pb.RUNNING for t in live(admin, svc.id)))

            scaled = pb.Service()
            scaled.CopyFrom(admin.get("service", svc.id))
            scaled.spec.replicated.replicas = 2
            await admin.update("service", scaled)
            doomed = await until(lambda: [t for t in admin.tasks_of_service(svc.id) if t.desired_state == pb.REMOVE] or None)
            assert len(doomed) == 2 and len({t.node_id for t in doomed}) == 2  # one from each node
            await report(admin, doomed, pb.SHUTDOWN)  # the agents stopped them
            await until(lambda: len(admin.tasks_of_service(svc.id)) == 2)

            await admin.delete("service", svc.id)  # the service is removed
            rest = await until(lambda: [t for t in admin.tasks_of_service(svc.id) if t.desired_state == pb.REMOVE] or None)
            await report(admin, rest, pb.SHUTDOWN)
            await until(lambda: not admin.tasks_of_service(svc.id))
        finally:
            if leader is not None:
                await leader.stop()
            await admin.close()
    asyncio.run(main())


def test_pending_with_explanation_until_a_node_fits(etcd_endpoint):
    async def main():
        admin = Store([etcd_endpoint])
        await admin.start()
        leader = None
        try:
            await admin.create("node", _node("small", cpus=1))
            leader = await Leader(etcd_endpoint).start()
            s = _service("big", 1)
            s.spec.task.resources.reservations.nano_cpus = 2 * 10**9
            svc = await admin.create("service", s)
            (t,) = await until(lambda: [t for t in admin.tasks_of_service(svc.id) if t.status.err] or None)
            assert t.status.state == pb.PENDING
            assert t.status.err == "no suitable node (1 node with insufficient resources)"
            big = await admin.create("node", _node("big", cpus=4))
            (t,) = await until(lambda: [t for t in admin.tasks_of_service(svc.id) if t.status.state == pb.ASSIGNED] or None)
            assert t.node_id == big.id and not t.status.err
        finally:
            if leader is not None:
                await leader.stop()
            await admin.close()
    asyncio.run(main())


def test_restart_policy_and_global_service(etcd_endpoint):
    async def main():
        admin = Store([etcd_endpoint])
        await admin.start()
        leader = None
        try:
            n1 = await admin.create("node", _node("n1"))
            leader = await Leader(etcd_endpoint).start()
            s = _service("crash", 1)
            s.spec.task.restart.condition = pb.RestartPolicy.ON_FAILURE
            s.spec.task.restart.max_attempts = 1
            s.spec.task.restart.delay.FromMilliseconds(300)
            svc = await admin.create("service", s)
            g = _service("agent", 0)
            getattr(g.spec, "global").SetInParent()
            gsvc = await admin.create("service", g)

            (t,) = await until(lambda: [t for t in live(admin, svc.id) if t.status.state == pb.ASSIGNED] or None)
            await report(admin, [t], pb.FAILED)
            loop = asyncio.get_running_loop()
            failed_at = loop.time()
            (r,) = await until(lambda: [x for x in live(admin, svc.id) if x.id != t.id] or None)
            assert loop.time() - failed_at >= 0.25  # the delay was waited for
            assert r.slot == t.slot and len(r.restarts) == 1
            assert admin.get("task", t.id).desired_state == pb.SHUTDOWN
            r = await until(lambda: (x := admin.get("task", r.id)) and x.status.state == pb.ASSIGNED and x)
            await report(admin, [r], pb.FAILED)
            await until(lambda: admin.get("task", r.id).desired_state == pb.SHUTDOWN)
            await asyncio.sleep(0.6)
            assert not live(admin, svc.id) and len(admin.tasks_of_service(svc.id)) == 2  # max attempts reached

            (g1,) = await until(lambda: live(admin, gsvc.id) or None)
            assert g1.node_id == n1.id and g1.slot == 0
            n2 = await admin.create("node", _node("n2"))  # joins later
            await until(lambda: {t.node_id for t in live(admin, gsvc.id)} == {n1.id, n2.id})
            drained = pb.Node()
            drained.CopyFrom(admin.get("node", n1.id))
            drained.spec.availability = pb.NodeSpec.DRAIN
            await admin.update("node", drained)
            await until(lambda: {t.node_id for t in live(admin, gsvc.id)} == {n2.id})
        finally:
            if leader is not None:
                await leader.stop()
            await admin.close()
    asyncio.run(main())
