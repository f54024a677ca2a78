"""The cluster end to end: real etcd, a real manager, three real agents running real containers.

One cluster serves the tests of this module (each test removes its services; drains are
undone); the agent-failure tests in test_cluster_failover.py have clusters of their own.
"""
from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from flotilla.proto import objects_pb2 as pb

from cluster_harness import BIN, Cluster, manager_available, wait_for

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.slow,
              pytest.mark.skipif(not manager_available(), reason="`swarmd manager` is not merged yet")]
SLEEP = ["sleep", "1000"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, busybox_tar):
    import uuid
    unique = uuid.uuid4().hex[:8]
    c = Cluster(tmp_path_factory.mktemp("cluster"), unique, busybox_tar, heartbeat=0.5)
    c.start()
    try:
        c.add_agents(a={"zone": "east"}, b={"zone": "west"}, c={"zone": "west"})
        c.wait_nodes_ready(3)
    except BaseException:
        c.close()
        raise
    yield c
    leaks = c.close()
    assert not leaks, "left behind:\n" + "\n".join(leaks)


def containers_of(cluster: Cluster, service) -> dict[str, list[dict]]:
    """hostname -> running containers of the service."""
    name = service.spec.annotations.name
    return {host: [c for c in cs if c["Config"]["Labels"].get("com.docker.swarm.service.name") == name]
            for host, cs in cluster.running_containers().items()}


def test_create_scale_and_remove(cluster):
    svc = cluster.create("web", SLEEP, replicas=3)
    tasks = cluster.wait_running(svc, 3)
    assert len({t.node_id for t in tasks}) == 3  # spread over the three nodes
    by_host = containers_of(cluster, svc)
    assert sorted(len(v) for v in by_host.values()) == [1, 1, 1]
    for t in tasks:
        host = cluster.hostname_of(t.node_id)
        (c,) = by_host[host]
        assert c["Name"].lstrip("/") == f"{svc.spec.annotations.name}.{t.slot}.{t.id}"
        labels = c["Config"]["Labels"]
        assert labels["com.docker.swarm.task.id"] == t.id
        assert labels["com.docker.swarm.task.name"] == f"{svc.spec.annotations.name}.{t.slot}.{t.id}"
        assert labels["com.docker.swarm.service.id"] == svc.id
        assert labels["com.docker.swarm.node.id"] == t.node_id
        assert c["HostConfig"]["RestartPolicy"]["Name"] == "no"
        assert t.status.container_status.container_id == c["Id"]

    cluster.scale(svc, 6)
    cluster.wait_running(svc, 6)
    wait_for(lambda: sum(len(v) for v in containers_of(cluster, svc).values()) == 6, what="6 containers")
    cluster.scale(svc, 2)
    cluster.wait_running(svc, 2)
    wait_for(lambda: sum(len(v) for v in containers_of(cluster, svc).values()) == 2, what="2 running containers")
    # scaled-down tasks are stopped and, once the orchestrator lets them go, their containers removed
    wait_for(lambda: sum(len([c for c in a.containers() if c["Name"].lstrip("/").startswith(svc.spec.annotations.name)])
                         for a in cluster.agents.values()) == 2, 30, what="4 containers removed")

    cluster.remove(svc)
    wait_for(lambda: not any(a.containers() for a in cluster.agents.values()), 30, what="every container removed")
    wait_for(lambda: not cluster.tasks(svc), 30, what="the tasks to be reaped")


def test_failing_task_is_restarted_per_policy(cluster):
    restart = pb.RestartPolicy(condition=pb.RestartPolicy.ON_FAILURE, max_attempts=2)
    restart.delay.FromMilliseconds(100)
    svc = cluster.create("crash", ["sh", "-c", "echo boom; exit 3"], replicas=1, restart=restart)

    def failed():
        tasks = [t for t in cluster.tasks(svc) if t.status.state == pb.FAILED]
        return tasks if len(tasks) >= 3 else None
    tasks = wait_for(failed, 30, what="the first run and two restarts to fail")
    for t in tasks:
        assert t.slot == 1
        assert t.status.err == "task: non-zero exit (3)"
        assert t.status.container_status.exit_code == 3
    # max_attempts reached: no fourth task, nothing desired to run
    wait_for(lambda: all(t.desired_state > pb.RUNNING or t.status.state > pb.RUNNING for t in cluster.tasks(svc)),
             10, what="the supervisor to give up")
    assert len(cluster.tasks(svc)) == 3
    cluster.remove(svc)
    wait_for(lambda: not any(a.containers() for a in cluster.agents.values()), 30, what="every container removed")


def test_drain_moves_tasks_away(cluster):
    svc = cluster.create("drain", SLEEP, replicas=3)
    cluster.wait_running(svc, 3)
    b = cluster.agents["b"]
    node_b = cluster.node(b)
    cluster.set_availability(b, pb.NodeSpec.DRAIN)
    try:
        def moved():
            run = cluster.wait_running(svc, 3)
            return run if all(t.node_id != node_b.id for t in run) else None
        wait_for(moved, 30, what="tasks to leave the drained node")
        wait_for(lambda: not containers_of(cluster, svc)[b.hostname], 20, what="b's container to stop")
    finally:
        cluster.set_availability(b, pb.NodeSpec.ACTIVE)
    cluster.remove(svc)
    wait_for(lambda: not any(a.containers() for a in cluster.agents.values()), 30, what="every container removed")


def test_global_service_and_label_constraint(cluster):
    glob = cluster.create("global", SLEEP, global_=True)
    tasks = cluster.wait_running(glob, 3)
    assert len({t.node_id for t in tasks}) == 3
    west = cluster.create("west", SLEEP, replicas=4, constraints=("engine.labels.zone==west",))
    tasks = cluster.wait_running(west, 4)
    hosts = Counter(cluster.hostname_of(t.node_id) for t in tasks)
    assert set(hosts) == {cluster.agents["b"].hostname, cluster.agents["c"].hostname}
    assert not containers_of(cluster, west)[cluster.agents["a"].hostname]
    cluster.remove(glob)
    cluster.remove(west)
    wait_for(lambda: not any(a.containers() for a in cluster.agents.values()), 30, what="every container removed")


def test_service_logs(cluster):
    svc = cluster.create("logs", ["sh", "-c", "for i in 1 2 3; do echo line $i; done; echo oops >&2; sleep 1000"],
                         replicas=2)
    tasks = cluster.wait_running(svc, 2)
    cmd = [str(BIN / "swarmctl"), "service", "logs", "-m", cluster.remote, svc.spec.annotations.name]

    def complete():
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        return res if res.stdout.count("line 3") == 2 and res.stderr.count("oops") == 2 else None
    res = wait_for(complete, 20, what="every task's lines")
    for t in tasks:
        prefix = f"{t.annotations.name}.{t.id[:12]}@{cluster.hostname_of(t.node_id)}"
        lines = [line for line in res.stdout.splitlines() if line.startswith(prefix)]
        assert [line.split("| ", 1)[1] for line in lines] == ["line 1", "line 2", "line 3"]
    tail = subprocess.run([*cmd[:-1], "--tail", "1", cmd[-1]], capture_output=True, text=True, timeout=30)
    assert tail.stdout.count("line") == 0 and tail.stderr.count("oops") == 2  # the last line is stderr's
    one = subprocess.run([*cmd[:-1], tasks[0].id], capture_output=True, text=True, timeout=30)
    assert one.stdout.count("line 1") == 1
    missing = subprocess.run([*cmd[:-1], f"nosuch-{cluster.unique}"], capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0 and "no such service or task" in missing.stderr
    cluster.remove(svc)
    wait_for(lambda: not any(a.containers() for a in cluster.agents.values()), 30, what="every container removed")


def test_service_logs_follow_sees_tasks_started_later(cluster):
    import queue
    import threading

    svc = cluster.create("follow", ["sh", "-c", "echo hello from $HOSTNAME; sleep 1000"], replicas=1)
    cluster.wait_running(svc, 1)
    cmd = [str(BIN / "swarmctl"), "service", "logs", "-f", "-m", cluster.remote, svc.spec.annotations.name]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        try:
            assert "hello from" in lines.get(timeout=20)
            cluster.scale(svc, 2)  # a task that did not exist when the subscription began
            tasks = cluster.wait_running(svc, 2)
            line = lines.get(timeout=20)
            assert "hello from" in line
            assert line.split("@")[0] in {f"{t.annotations.name}.{t.id[:12]}" for t in tasks}
            cluster.remove(svc)  # the subscription ends with the service
            assert proc.wait(30) == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    wait_for(lambda: not any(a.containers() for a in cluster.agents.values()), 30, what="every container removed")


def _swarmctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN / "swarmctl"), *args], capture_output=True, text=True, timeout=60,
                         env={"FLOTILLA_MANAGER": f"unix://{cluster.control_socket}", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, f"swarmctl {' '.join(args)}: {res.stderr}"
    return res


def test_service_init_runs_tasks_under_an_init(cluster):
    """`service create --init`: each task's container has an init as pid 1 (HostConfig.Init); `service update
    --no-init` replaces the tasks with ones without it."""
    name = f"init-{cluster.unique}"
    _swarmctl(cluster, "service", "create", "--name", name, "--init", "busybox:latest", *SLEEP)
    svc = cluster.service(name)
    assert svc.spec.task.container.init
    (first,) = cluster.wait_running(svc, 1)
    ctr = next(c for cs in containers_of(cluster, svc).values() for c in cs)
    assert ctr["HostConfig"]["Init"] is True and ctr["Id"] == first.status.container_status.container_id
    _swarmctl(cluster, "service", "update", "--no-init", name)

    def replaced():
        running = [c for cs in containers_of(cluster, svc).values() for c in cs]
        return running if len(running) == 1 and running[0]["Id"] != ctr["Id"] else None
    (again,) = wait_for(replaced, 60, what="the task to be replaced")
    assert again["HostConfig"]["Init"] is False
    cluster.remove(svc)
    wait_for(lambda: not any(a.containers() for a in cluster.agents.values()), 30, what="every container removed")
    wait_for(lambda: not cluster.tasks(svc), 30, what="the tasks to be reaped")
