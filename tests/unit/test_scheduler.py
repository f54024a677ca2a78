"""Scheduler placement on plain protobufs: filters, spread, preferences, explanations."""
from collections import Counter

from flotilla.manager.scheduler.nodeinfo import Cluster
from flotilla.manager.scheduler.placement import place
from flotilla.proto import objects_pb2 as pb

from orch_helpers import node, service, task


def _cluster(*nodes, tasks=()):
    c = Cluster()
    for n in nodes:
        c.set_node(n)
    for t in tasks:
        c.account(t.id, t)
    return c


def _pending(svc, count, **kw):
    return [task(svc, i + 1, state=pb.PENDING, node_id="", **kw) for i in range(count)]


def test_spreads_a_service_evenly_then_by_total_tasks():
    other = service("other")
    busy = [task(other, i, node_id="n1", state=pb.RUNNING) for i in range(3)]
    c = _cluster(node("n1"), node("n2"), node("n3"), tasks=busy)
    svc = service()
    out = place(_pending(svc, 5), c)
    per_node = Counter(n for _, n in out.assigned)
    assert per_node == {"n2": 2, "n3": 2, "n1": 1}  # n1 already runs 3 other tasks
    assert not out.unschedulable


def test_existing_tasks_of_the_service_count_for_spread():
    svc = service()
    c = _cluster(node("n1"), node("n2"), tasks=[task(svc, 1, node_id="n1"), task(svc, 2, node_id="n1")])
    out = place(_pending(svc, 2), c)
    assert Counter(n for _, n in out.assigned) == {"n2": 2}


def test_unavailable_nodes_are_skipped_and_explained():
    svc = service()
    c = _cluster(node("n1", state=pb.NodeStatus.DOWN), node("n2", availability=pb.NodeSpec.DRAIN), node("n3", availability=pb.NodeSpec.PAUSE))
    out = place(_pending(svc, 1), c)
    assert not out.assigned
    ((t, why),) = out.unschedulable.values()
    assert why == "no suitable node (3 nodes not available for new tasks)"


def test_resources_are_reserved_and_explained():
    svc = service()
    svc.spec.task.resources.reservations.nano_cpus = 3 * 10**9
    c = _cluster(node("n1", cpus=4), node("n2", cpus=4), node("n3", state=pb.NodeStatus.DOWN), node("n4", state=pb.NodeStatus.DOWN))
    out = place(_pending(svc, 3), c)
    assert sorted(n for _, n in out.assigned) == ["n1", "n2"]
    (why,) = {w for _, w in out.unschedulable.values()}
    assert why == "no suitable node (2 nodes not available for new tasks; 2 nodes with insufficient resources)"
    assert c.nodes["n1"].free_cpus == 10**9


def test_reservations_of_running_tasks_are_subtracted_and_freed_when_they_end():
    svc = service()
    svc.spec.task.resources.reservations.memory_bytes = 6 << 30
    running = task(svc, 1, node_id="n1")
    c = _cluster(node("n1", mem_gib=8), tasks=[running])
    assert not place(_pending(svc, 1), c).assigned
    ended = pb.Task()
    ended.CopyFrom(running)
    ended.status.state = pb.FAILED
    assert c.account(ended.id, ended) is True  # freed: the scheduler retries pending tasks
    assert len(place(_pending(svc, 1), c).assigned) == 1


def test_accounting_the_same_task_twice_is_harmless():
    svc = service()
    t = task(svc, 1, node_id="n1")
    c = _cluster(node("n1"), tasks=[t, t])
    assert c.nodes["n1"].tasks == 1 and c.nodes["n1"].per_service == {"svc": 1}
    c.account(t.id, None)
    assert c.nodes["n1"].tasks == 0 and c.nodes["n1"].per_service == {}


def test_constraints_and_platforms_filter():
    svc = service(constraints=["node.labels.zone==a", "engine.labels.disk!=hdd"])
    svc.spec.task.placement.platforms.add(os="linux", architecture="amd64")  # x86_64 is amd64
    c = _cluster(node("n1", labels={"zone": "a"}), node("n2", labels={"zone": "b"}), node("n3", labels={"zone": "a"}, engine={"disk": "hdd"}))
    out = place(_pending(svc, 2), c)
    assert {n for _, n in out.assigned} == {"n1"}
    arm = service("arm")
    arm.spec.task.placement.platforms.add(os="linux", architecture="arm64")
    (why,) = {w for _, w in place(_pending(arm, 1), c).unschedulable.values()}
    assert why == "no suitable node (3 nodes with an unsupported platform)"


def test_max_replicas_per_node():
    svc = service()
    svc.spec.task.placement.max_replicas = 1
    out = place(_pending(svc, 3), _cluster(node("n1"), node("n2")))
    assert len(out.assigned) == 2
    (why,) = {w for _, w in out.unschedulable.values()}
    assert why == "no suitable node (2 nodes at the max replicas per node limit)"


def test_spread_preference_balances_label_values_first():
    svc = service()
    svc.spec.task.placement.preferences.add(spread_descriptor="node.labels.zone")
    nodes = [node("a1", labels={"zone": "a"}), node("a2", labels={"zone": "a"}), node("a3", labels={"zone": "a"}), node("b1", labels={"zone": "b"})]
    out = place(_pending(svc, 4), _cluster(*nodes))
    zones = Counter(n[0] for _, n in out.assigned)
    assert zones == {"a": 2, "b": 2}


def test_global_tasks_only_go_to_their_node():
    svc = service(global_=True)
    svc.spec.task.resources.reservations.nano_cpus = 5 * 10**9
    t1 = task(svc, 0, state=pb.PENDING, node_id="n1")
    t2 = task(svc, 0, state=pb.PENDING, node_id="big")
    gone = task(svc, 0, state=pb.PENDING, node_id="zz")
    out = place([t1, t2, gone], _cluster(node("n1"), node("big", cpus=8)))
    assert out.assigned == [(t2, "big")]
    assert out.unschedulable[t1.id][1] == "no suitable node (1 node with insufficient resources)"
    assert out.unschedulable[gone.id][1] == "no suitable node (node zz is gone)"


def test_no_nodes_at_all():
    (why,) = {w for _, w in place(_pending(service(), 1), Cluster()).unschedulable.values()}
    assert why == "no suitable node (no nodes in the cluster)"


def test_big_batch_spreads_perfectly():
    """10,000 tasks over 1,000 nodes in one call: every node gets exactly 10 (perfect spread)."""
    c = _cluster(*[node(f"n{i}") for i in range(1000)])
    svc = service(replicas=10_000)
    pending = [pb.Task(id=f"p{i}", service_id=svc.id, slot=i + 1, status=pb.TaskStatus(state=pb.PENDING)) for i in range(10_000)]
    for p in pending:
        p.spec.CopyFrom(svc.spec.task)
    out = place(pending, c)
    assert set(Counter(n for _, n in out.assigned).values()) == {10}
