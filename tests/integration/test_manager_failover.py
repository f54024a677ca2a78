"""Managers as real `swarmd manager` processes: leader failover after kill -9, and a manager
killed and restarted in the middle of a scale-up, with hollow nodes as the agents."""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from flotilla.proto import control_pb2 as cpb
from flotilla.proto import control_pb2_grpc as cgrpc
from flotilla.proto import objects_pb2 as pb
from flotilla.swarmd.hollow import HollowCluster, HollowConfig

from manager_process import ManagerProc, etcd_dump, leaked_processes, wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(180)]
TTL = 2


async def leader(endpoint: str) -> str:
    """The id of the manager holding the leader key ('' when none)."""
    dump = await etcd_dump(endpoint)
    return dump.get(b"/flotilla/v1/leader", (b"", 0))[0].decode()


async def manager_ids(endpoint: str) -> set[str]:
    dump = await etcd_dump(endpoint)
    return {k.rsplit(b"/", 1)[-1].decode() for k in dump if k.startswith(b"/flotilla/v1/managers/")}


async def serving(control) -> bool:
    try:
        return bool((await control.ListClusters(cpb.ListClustersRequest(), timeout=1)).clusters)
    except grpc.aio.AioRpcError:
        return False


def service_spec(name: str, replicas: int) -> pb.ServiceSpec:
    spec = pb.ServiceSpec()
    spec.annotations.name = name
    spec.task.container.image = "busybox:latest"
    spec.task.restart.delay.FromMilliseconds(0)
    spec.replicated.replicas = replicas
    return spec


async def running(control, service_id: str) -> list[pb.Task]:
    tasks = (await control.ListTasks(cpb.ListTasksRequest(service_ids=[service_id]), timeout=5)).tasks
    return [t for t in tasks if t.desired_state <= pb.RUNNING]


def test_leader_failover_after_kill_9(etcd_endpoint, tmp_path, unique):
    a, b = ManagerProc(etcd_endpoint, tmp_path, f"a-{unique}", TTL), ManagerProc(etcd_endpoint, tmp_path, f"b-{unique}", TTL)

    async def main():
        a.start()
        await wait_until(lambda: leader(etcd_endpoint), "a leader")
        first = await leader(etcd_endpoint)
        b.start()
        await wait_until(lambda: _count(manager_ids(etcd_endpoint), 2), "both managers registered")
        async with grpc.aio.insecure_channel(a.remote) as ca, grpc.aio.insecure_channel(b.remote) as cb:
            control_a, control_b = cgrpc.ControlStub(ca), cgrpc.ControlStub(cb)
            await wait_until(lambda: serving(control_b), "manager b serving")
            assert await serving(control_a)
            assert await leader(etcd_endpoint) == first  # b follows
            hollow = HollowCluster(HollowConfig(manager=b.remote, name_prefix=f"hf-{unique}", tick=0.05), 2)
            hollow.start()
            try:
                killed = time.monotonic()
                a.kill()
                await wait_until(lambda: _differs(leader(etcd_endpoint), first), "b to take over", timeout=TTL * 5)
                took = time.monotonic() - killed
                print(f"failover: leader after {took:.2f}s (lease TTL {TTL}s)")
                svc = (await control_b.CreateService(cpb.CreateServiceRequest(spec=service_spec(f"f-{unique}", 4)))).service
                await wait_until(lambda: _all_running(control_b, svc.id, 4), "4 tasks running under the new leader")
            finally:
                await hollow.close()

    try:
        asyncio.run(main())
    finally:
        a.kill()
        b.stop()
    assert b.proc.returncode == 0, b.log.read_text()[-2000:]
    assert not b.socket.exists()
    assert not leaked_processes(unique)


def test_manager_restart_mid_scale_up(etcd_endpoint, tmp_path, unique):
    m = ManagerProc(etcd_endpoint, tmp_path, f"r-{unique}", TTL)

    async def main():
        m.start()
        async with grpc.aio.insecure_channel(m.remote) as ch:
            control = cgrpc.ControlStub(ch)
            await wait_until(lambda: serving(control), "the manager")
            hollow = HollowCluster(HollowConfig(manager=m.remote, name_prefix=f"hr-{unique}", tick=0.05, step=0.02), 5)
            hollow.start()
            try:
                await wait_until(lambda: _ready_nodes(control, 5), "5 READY nodes")
                svc = (await control.CreateService(cpb.CreateServiceRequest(spec=service_spec(f"r-{unique}", 300)))).service
                await wait_until(lambda: _count(running(control, svc.id), 1, at_least=True), "the scale-up to begin")
                m.kill()
                m.start()  # same addresses: the hollow nodes reconnect
                await wait_until(lambda: serving(control), "the restarted manager")
                await wait_until(lambda: _all_running(control, svc.id, 300), "300 running tasks", timeout=60)
                tasks = await running(control, svc.id)
                assert len({t.slot for t in tasks}) == 300  # one task per slot: nothing duplicated by the restart
            finally:
                await hollow.close()

    try:
        asyncio.run(main())
    finally:
        m.stop()
    assert m.proc.returncode == 0, m.log.read_text()[-2000:]
    assert not leaked_processes(unique)


async def _count(coro, n: int, at_least: bool = False) -> bool:
    got = len(await coro)
    return got >= n if at_least else got == n


async def _differs(coro, value: str) -> bool:
    got = await coro
    return bool(got) and got != value


async def _all_running(control, service_id: str, n: int) -> bool:
    try:
        tasks = await running(control, service_id)
    except grpc.aio.AioRpcError:
        return False
    return len(tasks) == n and all(t.status.state == pb.RUNNING for t in tasks)


async def _ready_nodes(control, n: int) -> bool:
    nodes = (await control.ListNodes(cpb.ListNodesRequest(), timeout=2)).nodes
    return sum(1 for x in nodes if x.status.state == pb.NodeStatus.READY) >= n
