"""Services on a cluster network, end to end: real etcd, a real manager, one real agent.

A `bridge` cluster network is built on the node when its first task needs it and removed
when the last task on it goes. Two services on it reach each other by service name (the
agent's DNS); a task has eth0 in the network's subnet; after `service rm` and `network rm`
no bridge, veth, namespace or iptables rule of the agent's network instance remains.
The subnet is one no host route covers, so parallel runs of anything on this host never
clash; all traffic stays between network namespaces of this test.
"""
from __future__ import annotations

import ipaddress
import subprocess
import uuid

import pytest

from cluster_harness import BIN, Cluster, manager_available, wait_for
from flotilla.proto import objects_pb2 as pb
from test_cli_network import echo_script, free_subnet, ours

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.slow,
              pytest.mark.skipif(not manager_available(), reason="`swarmd manager` is not merged yet")]
ECHO = ["nc", "-ll", "-p", "7", "-e", "cat"]  # a TCP echo server on port 7
SLEEP = ["sleep", "1000"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, busybox_tar):
    unique = uuid.uuid4().hex[:8]
    c = Cluster(tmp_path_factory.mktemp("netcluster"), unique, busybox_tar, heartbeat=0.5)
    c.start()
    try:
        c.add_agents(a={})
        c.wait_nodes_ready(1)
    except BaseException:
        c.close()
        raise
    yield c
    agent = c.agents["a"]
    leaks = c.close()
    assert not leaks, "left behind:\n" + "\n".join(leaks)
    assert ours(agent) == {"links": [], "netns": [], "iptables": []}


def swarmctl(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN / "swarmctl"), *args], capture_output=True, text=True, timeout=60,
                         env={"FLOTILLA_MANAGER": f"unix://{cluster.control_socket}", "PATH": "/usr/bin:/bin"})
    if check:
        assert res.returncode == 0, f"swarmctl {' '.join(args)}: {res.stderr}"
    return res


def running_container(cluster: Cluster, service) -> dict:
    name = service.spec.annotations.name
    (task,) = cluster.wait_running(service, 1)
    agent = cluster.agents["a"]
    return next(c for c in agent.running() if c["Id"] == task.status.container_status.container_id
                and c["Config"]["Labels"]["com.docker.swarm.service.name"] == name)


def networked(cluster: Cluster, name: str, args: list[str], network: str, aliases: tuple[str, ...] = ()) -> pb.Service:
    spec = cluster.service_spec(name, args, replicas=1)
    spec.task.networks.add(target=network, aliases=aliases)
    from flotilla.proto import control_pb2 as cpb

    return cluster.control.CreateService(cpb.CreateServiceRequest(spec=spec)).service


def test_services_on_a_cluster_network_reach_each_other_by_name(cluster):
    u = cluster.unique
    agent = cluster.agents["a"]
    subnet = free_subnet()
    name = f"appnet-{u}"
    net_id = swarmctl(cluster, "network", "create", "--scope", "swarm", "--subnet", subnet, name).stdout.strip()
    assert name in swarmctl(cluster, "network", "ls", "--scope", "swarm").stdout
    assert not [n for n in agent.ctl("network", "ls").stdout.split() if n == name]  # built only when a task needs it

    srv = networked(cluster, "srv", ECHO, name, aliases=(f"echo-{u}",))
    cli = networked(cluster, "cli", SLEEP, net_id[:12])
    assert cluster.service(srv.id).spec.task.networks[0].target == net_id  # the name was resolved to the id
    srv_ctr, cli_ctr = running_container(cluster, srv), running_container(cluster, cli)

    # one local network of that name on the node, the cluster's subnet, both tasks on it
    local = [line.split() for line in agent.ctl("network", "ls").stdout.splitlines() if f" {name} " in f" {line} "]
    assert len(local) == 1
    srv_ip = srv_ctr["NetworkSettings"]["Networks"][name]["IPAddress"]
    assert ipaddress.ip_address(srv_ip) in ipaddress.ip_network(subnet)
    eth0 = agent.ctl("exec", cli_ctr["Id"], "ip", "-4", "-o", "addr", "show", "eth0").stdout
    cli_ip = eth0.split("inet ")[1].split("/")[0]
    assert ipaddress.ip_address(cli_ip) in ipaddress.ip_network(subnet)

    # by service name, Docker's tasks.SERVICE and the user's alias
    for target in (srv.spec.annotations.name, f"tasks.{srv.spec.annotations.name}", f"echo-{u}"):
        out = agent.ctl("exec", cli_ctr["Id"], "sh", "-c", echo_script(target, f"hi-{u}")).stdout
        assert f"resolved={srv_ip}" in out and f"got=hi-{u}" in out, (target, out)

    res = swarmctl(cluster, "network", "rm", "--scope", "swarm", name, check=False)
    assert res.returncode == 1 and "in use by service" in res.stderr

    cluster.remove(srv)
    cluster.remove(cli)
    wait_for(lambda: not agent.containers(), 30, what="the task containers to be removed")
    wait_for(lambda: f" {name} " not in f" {agent.ctl('network', 'ls').stdout} ", 10,
             what="the node's copy of the network to be removed")
    wait_for(lambda: not cluster.tasks(srv) and not cluster.tasks(cli), 30, what="the tasks to be reaped")
    swarmctl(cluster, "network", "rm", "--scope", "swarm", name)
    assert name not in swarmctl(cluster, "network", "ls", "--scope", "swarm").stdout
    assert ours(agent) == {"links": [], "netns": [], "iptables": []}


def test_service_without_networks_stays_on_none(cluster):
    svc = cluster.create("plain", SLEEP, replicas=1)
    ctr = running_container(cluster, svc)
    assert ctr["HostConfig"]["NetworkMode"] == "none"
    cluster.remove(svc)
    wait_for(lambda: not cluster.agents["a"].containers(), 30, what="the container to be removed")


def test_cli_errors_are_one_line(cluster):
    u = cluster.unique
    res = swarmctl(cluster, "network", "create", "--scope", "swarm", "-d", "overlay", f"ov-{u}", check=False)
    assert res.returncode == 1 and "overlay driver is not built yet" in res.stderr and res.stderr.count("\n") == 1
    res = swarmctl(cluster, "service", "create", "--name", f"lost-{u}", "--network", f"nosuch-{u}", "busybox:latest",
                   check=False)
    assert res.returncode == 1 and f"network 'nosuch-{u}' not found" in res.stderr and res.stderr.count("\n") == 1
    res = swarmctl(cluster, "service", "create", "--name", f"mesh-{u}", "-p", "8080:80", "busybox:latest", check=False)
    assert res.returncode == 1 and "mode=ingress) is not built" in res.stderr
