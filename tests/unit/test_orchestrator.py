"""Orchestrator decisions (replicated, global, restart policy, reaper) on plain protobufs."""
from google.protobuf.duration_pb2 import Duration

from flotilla.manager.orchestrator.global_ import reconcile_global
from flotilla.manager.orchestrator.reaper import history_limit, reap
from flotilla.manager.orchestrator.removal import reconcile_removed
from flotilla.manager.orchestrator.replicated import reconcile_replicated
from flotilla.proto import objects_pb2 as pb

from orch_helpers import desired, node, service, task

NOW = 10_000.0
NODES = {n: node(n) for n in ("n1", "n2", "n3")}


def test_new_service_gets_one_pending_task_per_slot():
    svc = service(replicas=3)
    plan = reconcile_replicated(svc, [], NODES, NOW)
    assert sorted(t.slot for t in plan.creates) == [1, 2, 3]
    t = plan.creates[0]
    assert (t.status.state, t.desired_state, t.service_id, t.node_id) == (pb.PENDING, pb.RUNNING, "svc", "")
    assert t.spec_version.index == 1 and t.spec.container.image == "busybox"
    assert not plan.updates


def test_converged_service_needs_no_writes():
    svc = service(replicas=2)
    assert not reconcile_replicated(svc, [task(svc, 1), task(svc, 2)], NODES, NOW)


def test_scale_up_reuses_dead_slots_first():
    svc = service(replicas=3)
    gone = task(svc, 2, state=pb.SHUTDOWN, desired=pb.SHUTDOWN)
    plan = reconcile_replicated(svc, [task(svc, 1), gone], NODES, NOW)
    assert sorted(t.slot for t in plan.creates) == [2, 3]


def test_scale_down_prefers_not_running_then_busiest_node():
    svc = service(replicas=2)
    tasks = [
        task(svc, 1, node_id="n1"),
        task(svc, 2, node_id="n1"),
        task(svc, 3, node_id="n2"),
        task(svc, 4, state=pb.PENDING, node_id=""),
    ]
    plan = reconcile_replicated(svc, tasks, NODES, NOW)
    removed = {t.slot for t in plan.updates if t.desired_state == pb.REMOVE}
    assert removed == {4, 2}  # the pending one, then the highest slot on n1 (two tasks there)
    assert not plan.creates


def test_outdated_tasks_are_replaced_in_their_slot():
    svc = service(replicas=1, version=2)
    old = task(svc, 1, version=1)
    plan = reconcile_replicated(svc, [old], NODES, NOW)
    assert desired(plan) == {old.id: pb.SHUTDOWN}
    assert [(t.slot, t.spec_version.index) for t in plan.creates] == [(1, 2)]


def _policy(condition, max_attempts=0, delay=0.0, window=0.0):
    p = pb.RestartPolicy(condition=condition, max_attempts=max_attempts)
    p.delay.CopyFrom(Duration(seconds=int(delay), nanos=int((delay % 1) * 1e9)))
    if window:
        p.window.CopyFrom(Duration(seconds=int(window)))
    return p


def test_failed_task_is_restarted_in_its_slot_after_the_delay():
    svc = service(replicas=1, restart=_policy(pb.RestartPolicy.ANY, delay=5))
    failed = task(svc, 1, state=pb.FAILED, status_at=NOW - 1)
    early = reconcile_replicated(svc, [failed], NODES, NOW)
    assert not early and early.wake_at == NOW + 4
    plan = reconcile_replicated(svc, [failed], NODES, NOW + 4)
    assert desired(plan) == {failed.id: pb.SHUTDOWN}
    (new,) = plan.creates
    assert new.slot == 1 and len(new.restarts) == 1


def test_default_delay_is_five_seconds():
    svc = service(replicas=1)
    failed = task(svc, 1, state=pb.FAILED, status_at=NOW)
    assert reconcile_replicated(svc, [failed], NODES, NOW).wake_at == NOW + 5


def test_on_failure_leaves_completed_tasks_alone_and_slot_finished():
    svc = service(replicas=1, restart=_policy(pb.RestartPolicy.ON_FAILURE, delay=0))
    done = task(svc, 1, state=pb.COMPLETE)
    plan = reconcile_replicated(svc, [done], NODES, NOW)
    assert desired(plan) == {done.id: pb.SHUTDOWN} and not plan.creates
    done.desired_state = pb.SHUTDOWN
    assert not reconcile_replicated(svc, [done], NODES, NOW)  # stays finished on a later pass


def test_max_attempts_counts_the_restarts_in_the_window():
    svc = service(replicas=1, restart=_policy(pb.RestartPolicy.ON_FAILURE, max_attempts=2, delay=0, window=60))
    third = task(svc, 1, state=pb.FAILED, restarts=[NOW - 10, NOW - 5])
    plan = reconcile_replicated(svc, [third], NODES, NOW)
    assert desired(plan) == {third.id: pb.SHUTDOWN} and not plan.creates
    long_ago = task(svc, 1, state=pb.FAILED, restarts=[NOW - 100, NOW - 5])
    plan = reconcile_replicated(svc, [long_ago], NODES, NOW)
    assert [len(t.restarts) for t in plan.creates] == [2]  # the old restart fell out of the window


def test_condition_none_never_restarts():
    svc = service(replicas=1, restart=_policy(pb.RestartPolicy.NONE))
    failed = task(svc, 1, state=pb.FAILED)
    assert not reconcile_replicated(svc, [failed], NODES, NOW).creates


def test_tasks_on_down_or_drained_nodes_are_replaced():
    nodes = dict(NODES, n1=node("n1", state=pb.NodeStatus.DOWN), n2=node("n2", availability=pb.NodeSpec.DRAIN))
    svc = service(replicas=3)
    a, b, c = task(svc, 1, node_id="n1"), task(svc, 2, node_id="n2"), task(svc, 3, node_id="n3")
    plan = reconcile_replicated(svc, [a, b, c], nodes, NOW)
    assert desired(plan) == {a.id: pb.SHUTDOWN, b.id: pb.SHUTDOWN}
    assert sorted((t.slot, t.node_id) for t in plan.creates) == [(1, ""), (2, "")]


def test_paused_and_disconnected_nodes_keep_their_tasks():
    nodes = dict(NODES, n1=node("n1", availability=pb.NodeSpec.PAUSE), n2=node("n2", state=pb.NodeStatus.DISCONNECTED))
    svc = service(replicas=2)
    assert not reconcile_replicated(svc, [task(svc, 1, node_id="n1"), task(svc, 2, node_id="n2")], nodes, NOW)


def test_two_runnable_tasks_in_a_slot_keep_the_newest():
    svc = service(replicas=1)
    old, new = task(svc, 1), task(svc, 1)
    assert desired(reconcile_replicated(svc, [new, old], NODES, NOW)) == {old.id: pb.SHUTDOWN}


def test_removed_service_marks_everything_remove():
    svc = service()
    a, b = task(svc, 1), task(svc, 2, desired=pb.SHUTDOWN)
    assert desired(reconcile_removed([a, b])) == {a.id: pb.REMOVE, b.id: pb.REMOVE}


def test_global_one_task_per_eligible_node():
    nodes = {
        "n1": node("n1", labels={"zone": "a"}),
        "n2": node("n2", labels={"zone": "b"}),
        "n3": node("n3", labels={"zone": "a"}, state=pb.NodeStatus.DOWN),
        "n4": node("n4", labels={"zone": "a"}, availability=pb.NodeSpec.PAUSE),
        "n5": node("n5", labels={"zone": "a"}, state=pb.NodeStatus.DISCONNECTED),
    }
    svc = service(global_=True, constraints=["node.labels.zone==a"])
    on_n2 = task(svc, 0, node_id="n2")
    on_n3 = task(svc, 0, node_id="n3")
    on_n4 = task(svc, 0, node_id="n4")
    on_n5 = task(svc, 0, node_id="n5")
    on_gone = task(svc, 0, node_id="n9")
    plan = reconcile_global(svc, [on_n2, on_n3, on_n4, on_n5, on_gone], nodes, NOW)
    assert [(t.node_id, t.slot) for t in plan.creates] == [("n1", 0)]
    assert desired(plan) == {on_n2.id: pb.SHUTDOWN, on_n3.id: pb.SHUTDOWN, on_gone.id: pb.REMOVE}


def test_global_restart_stays_on_its_node():
    svc = service(global_=True, restart=_policy(pb.RestartPolicy.ANY, delay=0))
    failed = task(svc, 0, node_id="n2", state=pb.FAILED)
    plan = reconcile_global(svc, [failed], {"n2": NODES["n2"]}, NOW)
    assert [(t.node_id, len(t.restarts)) for t in plan.creates] == [("n2", 1)]


def test_reaper_keeps_history_limit_per_slot_oldest_go_first():
    svc = service(replicas=1)
    old = [task(svc, 1, state=pb.FAILED, desired=pb.SHUTDOWN) for _ in range(6)]
    live = task(svc, 1)
    doomed = reap([*old, live], NODES, limit=5)
    assert [t.id for t in doomed] == [old[0].id, old[1].id]  # 7 tasks, keep 5 including the running one
    assert reap([*old, live], NODES, limit=-1) == []


def test_reaper_never_deletes_what_an_agent_may_still_run():
    svc = service(replicas=1)
    stopping = [task(svc, 1, state=pb.RUNNING, desired=pb.SHUTDOWN) for _ in range(3)]
    assert reap(stopping, NODES, limit=1) == []


def test_reaper_deletes_remove_tasks_once_stopped_or_unassigned():
    svc = service()
    stopped = task(svc, 1, state=pb.SHUTDOWN, desired=pb.REMOVE)
    pending = task(svc, 2, state=pb.PENDING, desired=pb.REMOVE, node_id="")
    running = task(svc, 3, state=pb.RUNNING, desired=pb.REMOVE)
    on_down = task(svc, 4, state=pb.RUNNING, desired=pb.REMOVE, node_id="nd")
    nodes = dict(NODES, nd=node("nd", state=pb.NodeStatus.DOWN))
    assert {t.id for t in reap([stopped, pending, running, on_down], nodes, 5)} == {stopped.id, pending.id, on_down.id}


def test_history_limit_defaults_to_five():
    assert history_limit(None) == 5
    c = pb.Cluster()
    c.spec.orchestration.task_history_retention_limit = 2
    assert history_limit(c) == 2


def test_scale_up_can_be_done_in_parts():
    svc = service(replicas=5)
    part = reconcile_replicated(svc, [task(svc, 1)], NODES, NOW, max_new=2)
    assert sorted(t.slot for t in part.creates) == [2, 3] and part.more
    rest = reconcile_replicated(svc, [task(svc, s) for s in (1, 2, 3)], NODES, NOW, max_new=2)
    assert sorted(t.slot for t in rest.creates) == [4, 5] and not rest.more
