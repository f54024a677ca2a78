"""Agents and managers that die: kill -9 of an agent that comes back within the heartbeat
window (nothing rescheduled, containers adopted), one that stays away (its tasks move, its
stale containers stop when it returns), a manager restart and a manager failover (nothing
restarts)."""
from __future__ import annotations

import uuid

import pytest

from flotilla.proto import objects_pb2 as pb

from cluster_harness import Cluster, manager_available, wait_for

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.slow,
              pytest.mark.skipif(not manager_available(), reason="`swarmd manager` is not merged yet")]
SLEEP = ["sleep", "1000"]
HEARTBEAT = 1.5  # seconds: a node is DOWN after ~3 periods, long enough for an agent restart


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, busybox_tar):
    """Two managers on one etcd (agents know both) and two agents, shared by this module's
    tests in order: each removes its service; the last one kills the first manager for good."""
    c = Cluster(tmp_path_factory.mktemp("failover"), uuid.uuid4().hex[:8], busybox_tar, heartbeat=HEARTBEAT)
    c.start()
    try:
        c.start_backup_manager()
        c.add_agents(a={}, b={})
        c.wait_nodes_ready(2)
    except BaseException:
        c.close()
        raise
    yield c
    leaks = c.close()
    assert not leaks, "left behind:\n" + "\n".join(leaks)


def remove(cluster: Cluster, svc) -> None:
    cluster.remove(svc)
    wait_for(lambda: not any(a.containers() for a in cluster.agents.values()), 30, what="every container removed")


def pids(agent) -> dict[str, int]:
    return {c["Id"]: c["State"]["Pid"] for c in agent.running()}


def test_agent_killed_and_back_within_window_adopts(cluster):
    svc = cluster.create("adopt", SLEEP, replicas=4)
    before = {t.id: t for t in cluster.wait_running(svc, 4)}
    b = cluster.agents["b"]
    node_b = cluster.node(b)
    running_before = pids(b)
    assert running_before
    b.kill9()
    b.start()  # well within 3 heartbeat periods
    wait_for(lambda: cluster.node(b).status.state == pb.NodeStatus.READY and len(b.containers()) == len(running_before),
             10, what="b to be back")
    after = {t.id: t for t in cluster.wait_running(svc, 4)}
    assert after.keys() == before.keys()  # nothing rescheduled
    assert pids(b) == running_before  # the same processes: adopted, not restarted
    assert cluster.node(b).id == node_b.id  # the same node (its id kept in the state root)
    assert all(t.status.state == pb.RUNNING for t in cluster.tasks(svc))
    remove(cluster, svc)


def test_agent_away_past_window_loses_its_tasks(cluster):
    svc = cluster.create("resched", SLEEP, replicas=4)
    cluster.wait_running(svc, 4)
    a, b = cluster.agents["a"], cluster.agents["b"]
    node_b = cluster.node(b)
    stale = set(pids(b))
    assert stale
    b.kill9()
    wait_for(lambda: cluster.node(b).status.state == pb.NodeStatus.DOWN, 15, what="b to be DOWN")

    def moved():
        run = cluster.wait_running(svc, 4)
        return run if all(t.node_id != node_b.id for t in run) else None
    wait_for(moved, 30, what="b's tasks to be rescheduled onto a")
    assert len(a.running()) == 4
    b.start()  # its containers kept running meanwhile; the manager no longer wants them
    wait_for(lambda: not (stale & {c["Id"] for c in b.running()}), 30, what="b's stale containers to stop")
    old = [t for t in cluster.tasks(svc) if t.node_id == node_b.id]
    wait_for(lambda: all(t.status.state == pb.SHUTDOWN for t in cluster.tasks(svc) if t.node_id == node_b.id), 10,
             what="b's old tasks to be reported SHUTDOWN")
    assert len(old) == len(stale)
    assert len(cluster.wait_running(svc, 4)) == 4
    assert not b.running()
    remove(cluster, svc)


def test_manager_restart_restarts_nothing(cluster):
    svc = cluster.create("mgr", SLEEP, replicas=2)
    before = {t.id for t in cluster.wait_running(svc, 2)}
    all_pids = {**pids(cluster.agents["a"]), **pids(cluster.agents["b"])}
    cluster.manager.kill()
    cluster.manager.wait()
    cluster.start_manager()
    cluster.wait_nodes_ready(2)
    wait_for(lambda: {t.id for t in cluster.wait_running(svc, 2)} == before, 20, what="the same tasks running")
    assert {**pids(cluster.agents["a"]), **pids(cluster.agents["b"])} == all_pids
    cluster.wait_nodes_ready(2)
    remove(cluster, svc)


def test_manager_failover_restarts_nothing(cluster):
    """kill -9 of the manager the agents talk to: they fail over to the other one, which takes
    the lead, and every task keeps running in the same process."""
    svc = cluster.create("fo", SLEEP, replicas=2)
    before = {t.id for t in cluster.wait_running(svc, 2)}
    running = {**pids(cluster.agents["a"]), **pids(cluster.agents["b"])}
    cluster.manager.kill()
    cluster.manager.wait()
    cluster.use_backup()
    for agent in cluster.agents.values():
        wait_for(lambda: f"with {cluster.backup_remote}: node" in agent.log(), 20,
                 what=f"{agent.hostname} to open a session with the other manager")
    cluster.scale(svc, 3)  # the other manager leads now: its reconcilers act
    after = {t.id for t in cluster.wait_running(svc, 3, timeout=40)}
    assert before <= after
    now = {**pids(cluster.agents["a"]), **pids(cluster.agents["b"])}
    assert {k: v for k, v in now.items() if k in running} == running
    assert all(n.status.state == pb.NodeStatus.READY for n in cluster.nodes())
    remove(cluster, svc)
