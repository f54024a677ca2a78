"""The Dispatcher on a real store (no reconcilers: the test plays the scheduler): sessions,
heartbeats and DOWN, assignments as COMPLETE then chained INCREMENTAL, batched status writes
that never move a task backwards."""
from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from flotilla.manager.dispatcher import Dispatcher
from flotilla.manager.store import Op, Store
from flotilla.proto import dispatcher_pb2 as dpb
from flotilla.proto import dispatcher_pb2_grpc as dgrpc
from flotilla.proto import objects_pb2 as pb

from etcd_server import free_port
from manager_process import wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(120)]
PERIOD = 0.2


@contextlib.asynccontextmanager
async def dispatcher_on(endpoint: str):
    store = Store([endpoint])
    await store.start()
    d = Dispatcher(store, "m1", "127.0.0.1:0", heartbeat_period=PERIOD)
    server = grpc.aio.server()
    dgrpc.add_DispatcherServicer_to_server(d, server)
    addr = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(addr)
    await server.start()
    d.start()
    channel = grpc.aio.insecure_channel(addr)
    try:
        yield store, d, dgrpc.DispatcherStub(channel)
    finally:
        await channel.close()
        await d.stop()
        await server.stop(0)
        await store.close()


def assigned_task(node_id: str, i: int, state: int = pb.ASSIGNED) -> pb.Task:
    t = pb.Task(node_id=node_id, service_id="svc", slot=i, desired_state=pb.RUNNING)
    t.status.state = state
    t.spec.container.image = "busybox"
    return t


async def open_session(stub, hostname: str, node_id: str = ""):
    call = stub.Session(dpb.SessionRequest(description=pb.NodeDescription(hostname=hostname), node_id=node_id))
    first = await call.read()
    return call, first


def test_session_heartbeat_down_and_reregister(etcd_endpoint, unique):
    async def main():
        async with dispatcher_on(etcd_endpoint) as (store, d, stub):
            call, first = await open_session(stub, f"a-{unique}")
            node_id, session_id = first.node.id, first.session_id
            assert first.node.status.state == pb.NodeStatus.READY and first.managers
            for _ in range(8):  # 1.6 s, twice the DOWN delay: heartbeats keep it READY
                resp = await stub.Heartbeat(dpb.HeartbeatRequest(session_id=session_id))
                assert abs(resp.period.ToNanoseconds() / 1e9 - PERIOD) < 1e-9
                await asyncio.sleep(PERIOD)
            assert store.get("node", node_id).status.state == pb.NodeStatus.READY
            await wait_until(lambda: store.get("node", node_id).status.state == pb.NodeStatus.DOWN, "DOWN after missed heartbeats")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Heartbeat(dpb.HeartbeatRequest(session_id=session_id))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            call.cancel()
            # the agent comes back with its id: same node, READY again
            call, again = await open_session(stub, f"a-{unique}", node_id)
            assert again.node.id == node_id and again.session_id != session_id
            assert store.get("node", node_id).status.state == pb.NodeStatus.READY
            assert store.count("node") == 1
            # removed while connected: the session ends, so the agent learns of it
            await store.delete("node", node_id)
            assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Heartbeat(dpb.HeartbeatRequest(session_id=again.session_id))
    asyncio.run(main())


def test_assignments_complete_then_incremental(etcd_endpoint, unique):
    async def main():
        async with dispatcher_on(etcd_endpoint) as (store, d, stub):
            call, first = await open_session(stub, f"b-{unique}")
            node_id = first.node.id
            pre = await store.batch([Op("create", "task", assigned_task(node_id, i)) for i in range(3)]
                                    + [Op("create", "task", assigned_task(node_id, 9, state=pb.PENDING)),
                                       Op("create", "task", assigned_task("other", 10))])
            stream = stub.Assignments(dpb.AssignmentsRequest(session_id=first.session_id))
            complete = await stream.read()
            assert complete.type == dpb.AssignmentsMessage.COMPLETE
            assert {c.task.id for c in complete.changes} == {t.id for t in pre[:3]}
            # many new tasks arrive as few messages; each message chains on the previous
            created = await store.batch([Op("create", "task", assigned_task(node_id, 100 + i)) for i in range(200)])
            seen, sequence, messages = set(), complete.results_in, 0
            while len(seen) < 200:
                msg = await asyncio.wait_for(stream.read(), 5)
                assert msg.type == dpb.AssignmentsMessage.INCREMENTAL and msg.applies_to == sequence
                sequence, messages = msg.results_in, messages + 1
                seen |= {c.task.id for c in msg.changes if c.action == dpb.AssignmentChange.UPDATE}
            assert seen == {t.id for t in created} and messages <= 5
            # a status-only change is not echoed; desired state and deletion are
            running = pb.Task()
            running.CopyFrom(store.get("task", pre[0].id))
            running.status.state = pb.RUNNING
            running = await store.update("task", running)
            stop = pb.Task()
            stop.CopyFrom(running)
            stop.desired_state = pb.SHUTDOWN
            await store.update("task", stop)
            await store.delete("task", pre[1].id)
            changes = {}
            while len(changes) < 2:
                msg = await asyncio.wait_for(stream.read(), 5)
                assert msg.applies_to == sequence
                sequence = msg.results_in
                changes.update({c.task.id: c for c in msg.changes})
            assert changes[pre[0].id].action == dpb.AssignmentChange.UPDATE and changes[pre[0].id].task.desired_state == pb.SHUTDOWN
            assert changes[pre[1].id].action == dpb.AssignmentChange.REMOVE
            stream.cancel()
            call.cancel()
    asyncio.run(main())


def test_status_updates_batched_and_monotonic(etcd_endpoint, unique):
    async def main():
        async with dispatcher_on(etcd_endpoint) as (store, d, stub):
            agents = [await open_session(stub, f"c{i}-{unique}") for i in range(20)]
            tasks = await store.batch([Op("create", "task", assigned_task(first.node.id, i)) for i, (_, first) in enumerate(agents)])
            await wait_until(lambda: store.revision >= max(t.meta.version.index for t in tasks), "the watch")
            rev = store.revision

            def report(i: int, state: int) -> dpb.UpdateTaskStatusRequest:
                return dpb.UpdateTaskStatusRequest(session_id=agents[i][1].session_id, updates=[
                    dpb.TaskStatusUpdate(task_id=tasks[i].id, status=pb.TaskStatus(state=state, message=pb.TaskState.Name(state).lower()))])

            await asyncio.gather(*(stub.UpdateTaskStatus(report(i, pb.RUNNING)) for i in range(20)))
            assert all(store.get("task", t.id).status.state == pb.RUNNING for t in tasks)
            await wait_until(lambda: store.revision > rev, "the watch")
            assert store.revision - rev <= 3, "20 agents' reports should be a transaction or few, not 20"
            # a late report of an earlier state is ignored; a report of another node's task too
            await stub.UpdateTaskStatus(report(0, pb.STARTING))
            foreign = dpb.UpdateTaskStatusRequest(session_id=agents[1][1].session_id, updates=[
                dpb.TaskStatusUpdate(task_id=tasks[0].id, status=pb.TaskStatus(state=pb.FAILED))])
            await stub.UpdateTaskStatus(foreign)
            assert store.get("task", tasks[0].id).status.state == pb.RUNNING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.UpdateTaskStatus(dpb.UpdateTaskStatusRequest(session_id="nosuch"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            for call, _ in agents:
                call.cancel()
    asyncio.run(main())
