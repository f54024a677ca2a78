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
from etcd_server import free_port
from flotilla.proto import control_pb2 as cpb
from flotilla.proto import objects_pb2 as pb
from test_cli_network import echo_script, free_subnet, ours, tcp_echo

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.slow,
              pytest.mark.skipif(not manager_available(), reason="`swarmd manager` is not merged yet")]
ECHO = ["nc", "-ll", "-p", "7", "-e", "cat"]  # a TCP echo server on port 7
SLEEP = ["sleep", "1000"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, busybox_tar):
    unique = uuid.uuid4().hex[:8]
    c = Cluster(tmp_path_factory.mktemp("netcluster"), unique, busybox_tar, heartbeat=2.0)  # an agent restart fits in 3 periods
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
    left = ours(agent)  # links, namespaces, firewall lines of the agent's network instance
    assert not any(left.values()), left


def swarmctl(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN / "swarmctl"), *args], capture_output=True, text=True, timeout=60,
                         env={"FLOTILLA_MANAGER": f"unix://{cluster.control_socket}", "PATH": "/usr/bin:/bin"})
    if check:
        assert res.returncode == 0, f"swarmctl {' '.join(args)}: {res.stderr}"
    return res


def running_containers(cluster: Cluster, service, count: int = 1) -> list[dict]:
    ids = {t.status.container_status.container_id for t in cluster.wait_running(service, count)}
    return [c for c in cluster.agents["a"].running() if c["Id"] in ids]


def networked(cluster: Cluster, name: str, args: list[str], network: str, aliases: tuple[str, ...] = (),
              replicas: int = 1, restart: pb.RestartPolicy | None = None) -> pb.Service:
    spec = cluster.service_spec(name, args, replicas=replicas, restart=restart)
    spec.task.networks.add(target=network, aliases=aliases)
    return cluster.control.CreateService(cpb.CreateServiceRequest(spec=spec)).service


def local_networks(agent, name: str) -> list[str]:
    """Lines of the node's `network ls` for `name`."""
    return [line for line in agent.ctl("network", "ls").stdout.splitlines() if name in line.split()]


def exchange(agent, container: str, target: str, word: str) -> str:
    return agent.ctl("exec", container, "sh", "-c", echo_script(target, word)).stdout


def test_services_on_a_cluster_network_reach_each_other_by_name(cluster):
    u = cluster.unique
    agent = cluster.agents["a"]
    subnet = free_subnet()
    name = f"appnet-{u}"
    net_id = swarmctl(cluster, "network", "create", "--scope", "swarm", "--subnet", subnet, name).stdout.strip()
    assert name in swarmctl(cluster, "network", "ls", "--scope", "swarm").stdout
    assert not local_networks(agent, name)  # built only when a task needs it

    srv = networked(cluster, "srv", ECHO, name, aliases=(f"echo-{u}",), replicas=2)
    cli = networked(cluster, "cli", SLEEP, net_id[:12])
    assert cluster.service(srv.id).spec.task.networks[0].target == net_id  # the name was resolved to the id
    srv_ips = {c["NetworkSettings"]["Networks"][name]["IPAddress"] for c in running_containers(cluster, srv, 2)}
    (cli_ctr,) = running_containers(cluster, cli)

    # three tasks prepared at once: one local network of that name (scope swarm), the cluster's subnet
    (line,) = local_networks(agent, name)
    assert line.split()[-1] == "swarm"
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(subnet) for ip in srv_ips) and len(srv_ips) == 2
    eth0 = agent.ctl("exec", cli_ctr["Id"], "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert ipaddress.ip_address(eth0.split("inet ")[1].split("/")[0]) in ipaddress.ip_network(subnet)

    # by service name, Docker's tasks.SERVICE and the user's alias
    for target in (srv.spec.annotations.name, f"tasks.{srv.spec.annotations.name}", f"echo-{u}"):
        out = exchange(agent, cli_ctr["Id"], target, f"hi-{u}")
        assert f"got=hi-{u}" in out and out.split("resolved=")[1].split()[0] in srv_ips, (target, out)

    # an agent killed and back: the containers are adopted with their networking, nothing is duplicated
    agent.kill9()
    agent.start()
    tasks = cluster.wait_running(cli, 1)
    assert {t.status.container_status.container_id for t in tasks} == {cli_ctr["Id"]}, [
        (pb.TaskState.Name(t.status.state), t.status.err) for t in cluster.tasks(cli)]
    assert len(local_networks(agent, name)) == 1
    assert f"got=again-{u}" in exchange(agent, cli_ctr["Id"], srv.spec.annotations.name, f"again-{u}")

    res = swarmctl(cluster, "network", "rm", "--scope", "swarm", name, check=False)
    assert res.returncode == 1 and "in use by service" in res.stderr

    # detached by `service update --network-rm`: the task is replaced by one on network none
    swarmctl(cluster, "service", "update", "--network-rm", name, cli.spec.annotations.name)
    assert not cluster.service(cli.id).spec.task.networks
    def replaced():
        ctrs = running_containers(cluster, cli)
        return ctrs if [c["Id"] for c in ctrs] != [cli_ctr["Id"]] else None
    (plain,) = wait_for(replaced, 30, what="the task to be replaced")
    assert plain["HostConfig"]["NetworkMode"] == "none"

    cluster.remove(srv)
    cluster.remove(cli)
    wait_for(lambda: not agent.containers(), 30, what="the task containers to be removed")
    wait_for(lambda: not local_networks(agent, name), 10, what="the node's copy of the network to be removed")
    wait_for(lambda: not cluster.tasks(srv) and not cluster.tasks(cli), 30, what="the tasks to be reaped")
    swarmctl(cluster, "network", "rm", "--scope", "swarm", name)
    assert name not in swarmctl(cluster, "network", "ls", "--scope", "swarm").stdout
    left = ours(agent)  # links, namespaces, firewall lines of the agent's network instance
    assert not any(left.values()), left


def test_host_mode_port_answers_on_the_node(cluster):
    u = cluster.unique
    agent = cluster.agents["a"]
    name = f"pubnet-{u}"
    swarmctl(cluster, "network", "create", "--scope", "swarm", "--subnet", free_subnet(), name)
    port = free_port()
    swarmctl(cluster, "service", "create", "--name", f"pub-{u}", "--network", name, "-p",
             f"published={port},target=7,mode=host", "--stop-grace-period", "1s", "busybox:latest", *ECHO)
    svc = cluster.service(f"pub-{u}")
    (ctr,) = running_containers(cluster, svc)
    assert agent.ctl("port", ctr["Id"], "7/tcp").stdout.strip().endswith(f":{port}")
    assert wait_for(lambda: tcp_echo("127.0.0.1", port, f"pub-{u}".encode()) == f"pub-{u}\n".encode(), 10,
                    what="the published port to answer")
    cluster.remove(svc)
    wait_for(lambda: not agent.containers(), 30, what="the container to be removed")
    wait_for(lambda: not cluster.tasks(svc), 30, what="the task to be reaped")
    swarmctl(cluster, "network", "rm", "--scope", "swarm", name)
    wait_for(lambda: not local_networks(agent, name), 10, what="the node's copy of the network to be removed")


def test_a_local_network_of_the_same_name_rejects_the_task(cluster):
    u = cluster.unique
    agent = cluster.agents["a"]
    name = f"taken-{u}"
    swarmctl(cluster, "network", "create", "--scope", "swarm", "--subnet", free_subnet(), name)
    agent.ctl("network", "create", "--subnet", free_subnet(), name)
    svc = networked(cluster, "clash", SLEEP, name, restart=pb.RestartPolicy(condition=pb.RestartPolicy.NONE))

    def rejected():
        return [t for t in cluster.tasks(svc) if t.status.state == pb.REJECTED]
    task = wait_for(rejected, 20, what="the task to be rejected")[0]
    assert "already exists on this node and is not the cluster network" in task.status.err
    cluster.remove(svc)
    wait_for(lambda: not agent.containers(), 30, what="the containers to be removed")
    assert len(local_networks(agent, name)) == 1  # the user's own network is never removed by the agent
    agent.ctl("network", "rm", name)
    wait_for(lambda: not cluster.tasks(svc), 60, what="the tasks to be reaped")
    swarmctl(cluster, "network", "rm", "--scope", "swarm", name)


def test_service_without_networks_stays_on_none(cluster):
    svc = cluster.create("plain", SLEEP, replicas=1)
    (ctr,) = running_containers(cluster, svc)
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
