"""Cluster networks built by the agent's worker on the real runtime and kernel (no manager):
tasks carry their networks as the dispatcher sends them; the node builds each network once,
attaches the containers with the service's aliases, and removes it with its last task."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import subprocess

import pytest

from flotilla.agent.reporter import Reporter
from flotilla.agent.task_networks import LABEL_NETWORK_ID
from flotilla.agent.worker import Worker
from flotilla.proto import objects_pb2 as pb
from flotilla.runtime.netwiring import instance_for
from flotilla.runtime.runtime import Runtime
from flotilla.runtime.spec import ContainerSpec

from test_cluster_agent_worker import make_task, state, until

pytestmark = pytest.mark.root


def free_subnet(unique: str, k: int) -> str:
    """A /24 in 10.128.0.0/9 derived from the test's suffix, checked against the host's routes."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    n = int(unique[:6], 16) if all(c in "0123456789abcdef" for c in unique[:6]) else hash(unique) & 0xFFFFFF
    for i in range(256):
        cand = ipaddress.ip_network(f"10.{128 + (n + i) % 128}.{(n // 128 + k * 7 + i) % 256}.0/24")
        if str(cand) not in routes:
            return str(cand)
    raise RuntimeError("no free subnet")


def cluster_network(unique: str, name: str, subnet: str) -> pb.Network:
    net = pb.Network(id=f"{name}{unique}".ljust(25, "0")[:25], spec=pb.NetworkSpec(driver="bridge"))
    net.spec.annotations.name = f"{name}-{unique}"
    gateway = str(next(ipaddress.ip_network(subnet).hosts()))
    net.ipam.add(subnet=subnet, gateway=gateway)
    return net


def on(task: pb.Task, *networks: pb.Network, aliases: tuple[str, ...] = ()) -> pb.Task:
    """The task as the dispatcher sends it: spec.networks by id, Task.networks filled."""
    service = task.service_annotations.name
    for n in networks:
        task.spec.networks.add(target=n.id, aliases=aliases)
        task.networks.add(network=n, aliases=[service, f"tasks.{service}", *aliases])
    return task


@pytest.fixture
def runtime(tmp_path, unique, busybox_tar):
    rt = Runtime(tmp_path / "root", cgroup_parent=f"flotilla-test-{unique}")
    rt.import_image(busybox_tar, "busybox:latest")
    yield rt
    for c in rt.list(all=True):
        rt.remove(c.id, force=True)
    for n in rt.net.nm.networks():
        if not n.builtin:
            rt.net.nm.remove_network(n.id)
    rt.close()
    rt.close_cgroup_parent()
    inst = instance_for(f"flotilla-test-{unique}")
    assert not [name for _, name in socket.if_nameindex() if name.startswith((f"fl{inst}-", f"fv{inst}-"))]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert f"FLOTILLA-{inst}-" not in rules


def local(rt: Runtime, name: str):
    return [n for n in rt.net.nm.networks() if n.name == name]


async def until_in_thread(check, what: str, timeout: float = 15.0):
    """`until` for checks that call the runtime: in a thread, as the agent does (pyroute2 runs
    an event loop of its own and cannot inside the test's)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await asyncio.to_thread(check)):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def test_tasks_share_one_built_network_which_goes_with_the_last_task(runtime, unique):
    front = cluster_network(unique, "front", free_subnet(unique, 1))
    back = cluster_network(unique, "back", free_subnet(unique, 2))

    async def scenario():
        reporter = Reporter()
        worker = Worker(runtime, reporter)
        worker.node_id = "n1"
        await worker.scan()
        tasks = [on(make_task(unique, i, ["sleep", "1000"]), front, aliases=("www",)) for i in (1, 2, 3)]
        both = on(make_task(unique, 4, ["sleep", "1000"]), front, back)
        worker.apply_complete([*tasks, both])  # four Prepares at once on the same network
        for t in [*tasks, both]:
            await until(lambda t=t: state(reporter, t) == pb.RUNNING, what=f"task {t.slot} RUNNING")
        (net,) = local(runtime, front.spec.annotations.name)
        assert net.labels[LABEL_NETWORK_ID] == front.id and (net.subnet, net.gateway) == (front.ipam[0].subnet, front.ipam[0].gateway)
        doc = await asyncio.to_thread(runtime.inspect, f"web{unique}.1.{tasks[0].id}")
        endpoint = doc["NetworkSettings"]["Networks"][front.spec.annotations.name]
        assert ipaddress.ip_address(endpoint["IPAddress"]) in ipaddress.ip_network(front.ipam[0].subnet)
        assert set(endpoint["Aliases"]) >= {f"web{unique}", f"tasks.web{unique}", "www"}
        both_doc = await asyncio.to_thread(runtime.inspect, f"web{unique}.4.{both.id}")
        assert set(both_doc["NetworkSettings"]["Networks"]) == {front.spec.annotations.name, back.spec.annotations.name}

        worker.apply_complete([tasks[0]])  # the only task on `back` goes: its network too
        await until_in_thread(lambda: len(runtime.list(all=True)) == 1, what="three containers removed")
        await until(lambda: not local(runtime, back.spec.annotations.name), what="back removed")
        assert local(runtime, front.spec.annotations.name)
        worker.apply_complete([])
        await until_in_thread(lambda: not runtime.list(all=True), what="the last container removed")
        await until(lambda: not local(runtime, front.spec.annotations.name), what="front removed")
        worker.close()
    asyncio.run(scenario())


def test_a_network_that_differs_rejects_the_task_and_is_kept(runtime, unique):
    net = cluster_network(unique, "app", free_subnet(unique, 3))
    other_subnet = free_subnet(unique, 4)

    async def scenario():
        reporter = Reporter()
        worker = Worker(runtime, reporter)
        worker.node_id = "n1"
        await worker.scan()
        await asyncio.to_thread(runtime.net.nm.create_network, net.spec.annotations.name, subnet=other_subnet,
                                labels={LABEL_NETWORK_ID: net.id})
        # a container configured on it keeps the agent's sweep of unused networks away from it
        user = ContainerSpec(image="busybox:latest", name=f"user-{unique}", cmd=["true"], network_mode=net.spec.annotations.name)
        await asyncio.to_thread(runtime.create, user)
        task = on(make_task(unique, 1, ["sleep", "1000"]), net)
        lost = make_task(unique, 2, ["sleep", "1000"])
        lost.spec.networks.add(target="gone")  # the manager no longer had the network
        worker.apply_complete([task, lost])
        await until(lambda: state(reporter, task) == pb.REJECTED, what="REJECTED")
        assert f"has subnet {other_subnet}" in reporter.observed(task.id).err
        await until(lambda: state(reporter, lost) == pb.REJECTED, what="REJECTED without the network")
        assert "network gone is not known to the manager" in reporter.observed(lost.id).err
        assert [c.name for c in await asyncio.to_thread(runtime.list, True)] == [f"user-{unique}"]
        worker.apply_complete([])
        await asyncio.sleep(0.2)
        worker.close()
    asyncio.run(scenario())


def test_a_network_left_unused_by_an_earlier_agent_is_removed(runtime, unique):
    """The agent died after removing a task's container but before removing its network."""
    net = cluster_network(unique, "left", free_subnet(unique, 5))

    async def scenario():
        await asyncio.to_thread(runtime.net.nm.create_network, net.spec.annotations.name, subnet=net.ipam[0].subnet,
                                labels={LABEL_NETWORK_ID: net.id})
        mine = await asyncio.to_thread(runtime.net.nm.create_network, f"mine-{unique}", subnet=free_subnet(unique, 6))
        worker = Worker(runtime, Reporter())
        worker.node_id = "n1"
        await worker.scan()
        worker.apply_complete([])
        await until(lambda: not local(runtime, net.spec.annotations.name), what="the leftover network removed")
        assert local(runtime, mine.name)  # a user's network is not the agent's to remove
        worker.close()
    asyncio.run(scenario())
