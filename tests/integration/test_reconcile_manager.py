"""The reconcilers in a real manager on a real etcd, driven through the Control API, with
hollow nodes speaking the real Dispatcher protocol."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from google.protobuf.duration_pb2 import Duration

from flotilla.proto import objects_pb2 as pb

from reconcile_harness import HEARTBEAT, Harness

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(120)]


@pytest.fixture
def harness(etcd_endpoint, tmp_path, unique):
    """Runs a test body against a manager on the test's etcd; everything stopped afterwards."""
    managers: list[Harness] = []

    async def main(body):
        h = Harness(etcd_endpoint, tmp_path, unique)
        managers.append(h)
        try:
            await h.ready()
            await body(h)
        finally:
            await h.close()

    yield lambda body: asyncio.run(main(body))
    for h in managers:
        assert h.proc.poll() is not None, "the manager process is still running"


def run(harness, body):
    harness(body)


def test_converge_scale_up_and_down(harness):
    async def body(h: Harness):
        h.nodes(3)
        await h.wait_nodes_ready(3)
        svc = await h.create("web", 6)
        tasks = await h.wait_running(svc.id, 6)
        assert sorted(Counter(t.node_id for t in tasks).values()) == [2, 2, 2]  # spread evenly
        assert sorted(t.slot for t in tasks) == [1, 2, 3, 4, 5, 6]

        await h.scale(svc, 2)
        kept = await h.wait_running(svc.id, 2)
        assert len({t.node_id for t in kept}) == 2  # scale-down keeps the spread

        async def removed_ones_deleted():  # desired REMOVE, stopped by the agent, deleted by the reaper
            return len(await h.tasks(svc.id)) == 2
        await h.wait("scaled-down tasks deleted", removed_ones_deleted)

        await h.scale(svc, 4)
        tasks = await h.wait_running(svc.id, 4)
        assert sorted(Counter(t.node_id for t in tasks).values()) == [1, 1, 2]
    run(harness, body)


def test_global_service_follows_nodes(harness):
    async def body(h: Harness):
        h.nodes(2, prefix="a")
        await h.wait_nodes_ready(2)
        svc = await h.create("agent", global_=True)
        tasks = await h.wait_running(svc.id, 2)
        assert len({t.node_id for t in tasks}) == 2 and {t.slot for t in tasks} == {0}
        h.nodes(1, prefix="b")  # joins later
        tasks = await h.wait_running(svc.id, 3)
        assert len({t.node_id for t in tasks}) == 3

        nodes = await h.wait_nodes_ready(3)
        await h.set_availability(nodes[0], pb.NodeSpec.DRAIN)
        await h.wait_running(svc.id, 2, avoid={nodes[0].id})
    run(harness, body)


def test_drain_moves_tasks_and_pause_takes_no_new_ones(harness):
    async def body(h: Harness):
        h.nodes(3)
        nodes = await h.wait_nodes_ready(3)
        svc = await h.create("web", 3)
        await h.wait_running(svc.id, 3)

        drained, paused = nodes[0], nodes[1]
        await h.set_availability(drained, pb.NodeSpec.DRAIN)
        tasks = await h.wait_running(svc.id, 3, avoid={drained.id})

        before = Counter(t.node_id for t in tasks)[paused.id]
        await h.set_availability(paused, pb.NodeSpec.PAUSE)
        await h.scale(svc, 5)
        tasks = await h.wait_running(svc.id, 5)
        on = Counter(t.node_id for t in tasks)
        assert on[paused.id] == before  # kept what it ran, got nothing new
        assert on[nodes[2].id] == 5 - before
    run(harness, body)


def test_unschedulable_task_waits_with_a_message_then_runs(harness):
    async def body(h: Harness):
        h.nodes(2, cpus=1)
        await h.wait_nodes_ready(2)
        big = await h.create("big", 1, cpus=2)
        picky = await h.create("picky", 1, constraints=["engine.labels.disk==ssd"])

        async def explained():
            tasks = await h.tasks(big.id) + await h.tasks(picky.id)
            errs = sorted(t.status.err for t in tasks if t.status.state == pb.PENDING)
            return errs if len(errs) == 2 and all(errs) else None
        errs = await h.wait("explanations of pending tasks", explained)
        assert errs == [
            "no suitable node (2 nodes not satisfying the scheduling constraints)",
            "no suitable node (2 nodes with insufficient resources)",
        ]
        h.nodes(1, prefix="big", cpus=4, labels={"disk": "ssd"})
        (t1,) = await h.wait_running(big.id, 1)
        (t2,) = await h.wait_running(picky.id, 1)
        newcomer = {n.id for n in await h.node_list() if n.description.hostname.startswith("big-")}
        assert {t1.node_id, t2.node_id} == newcomer
    run(harness, body)


def test_on_failure_restarts_up_to_max_attempts(harness):
    async def body(h: Harness):
        h.nodes(2)
        await h.wait_nodes_ready(2)
        policy = pb.RestartPolicy(condition=pb.RestartPolicy.ON_FAILURE, max_attempts=2)
        policy.delay.CopyFrom(Duration(nanos=50_000_000))
        failing = await h.create("crash", 1, env=["HOLLOW_EXIT=1"], restart=policy)
        done = await h.create("batch", 1, env=["HOLLOW_EXIT=0"], restart=policy)

        async def three_failures():
            tasks = await h.tasks(failing.id)
            failed = [t for t in tasks if t.status.state == pb.FAILED]
            return tasks if len(failed) == 3 and all(t.desired_state == pb.SHUTDOWN for t in tasks) else None
        tasks = await h.wait("the original and two restarts to fail", three_failures)
        assert {t.slot for t in tasks} == {1}
        assert sorted(len(t.restarts) for t in tasks) == [0, 1, 2]
        assert {t.status.container_status.exit_code for t in tasks} == {1}

        async def completed_once():
            tasks = await h.tasks(done.id)
            return tasks if [t.status.state for t in tasks] == [pb.COMPLETE] and tasks[0].desired_state == pb.SHUTDOWN else None
        await h.wait("the batch task to complete without restart", completed_once)
        await asyncio.sleep(0.5)  # nothing more happens
        assert len(await h.tasks(failing.id)) == 3 and len(await h.tasks(done.id)) == 1
    run(harness, body)


def test_tasks_of_a_down_node_are_rescheduled(harness):
    async def body(h: Harness):
        stays = h.nodes(2, prefix="stay")
        goes = h.nodes(1, prefix="go")
        await h.wait_nodes_ready(3)
        svc = await h.create("web", 6)
        tasks = await h.wait_running(svc.id, 6)
        lost = {n.id for n in await h.node_list() if n.description.hostname.startswith("go-")}
        moved_slots = {t.slot for t in tasks if t.node_id in lost}
        assert moved_slots
        await goes.close()  # the host vanishes: no more heartbeats

        async def down():
            return [n for n in await h.node_list() if n.id in lost and n.status.state == pb.NodeStatus.DOWN]
        await h.wait("the node to be DOWN", down, timeout=10 * HEARTBEAT + 10)
        await h.wait_running(svc.id, 6, avoid=lost)
        old = [t for t in await h.tasks(svc.id) if t.node_id in lost]
        assert {t.slot for t in old} == moved_slots and all(t.desired_state == pb.SHUTDOWN for t in old)
        assert stays.nodes
    run(harness, body)


def test_removed_service_whose_tasks_had_all_ended_is_deleted(harness):
    """Its tasks get desired REMOVE in a write that also ends the decision; the reaper must look
    at them again when that write comes back (nothing else will happen to them)."""
    from flotilla.proto import control_pb2 as cpb

    async def body(h: Harness):
        h.nodes(1)
        await h.wait_nodes_ready(1)
        svc = await h.create("rejected", 1, env=["HOLLOW_REJECT=1"],
                             restart=pb.RestartPolicy(condition=pb.RestartPolicy.NONE))

        async def rejected():
            tasks = await h.tasks(svc.id)
            return tasks and all(t.status.state == pb.REJECTED for t in tasks)
        await h.wait("the task rejected", rejected)
        await h.control.RemoveService(cpb.RemoveServiceRequest(service_id=svc.id))

        async def gone():
            services = (await h.control.ListServices(cpb.ListServicesRequest())).services
            return not await h.tasks(svc.id) and all(s.id != svc.id for s in services)
        await h.wait("the tasks and the service deleted", gone, timeout=10)
    run(harness, body)
