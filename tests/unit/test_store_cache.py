"""The cache's indexes follow tasks as they move between services and nodes."""
from __future__ import annotations

from flotilla.manager.store.cache import Cache
from flotilla.proto import objects_pb2 as pb


def test_indexes_follow_updates_and_removal():
    cache = Cache()
    cache.put("task", pb.Task(id="t1", service_id="s1"))
    assert list(cache.by_service["s1"]) == ["t1"] and "" not in cache.by_node
    old = cache.put("task", pb.Task(id="t1", service_id="s1", node_id="n1"))
    assert old.node_id == "" and list(cache.by_node["n1"]) == ["t1"]
    cache.put("task", pb.Task(id="t1", service_id="s2", node_id="n2"))
    assert "s1" not in cache.by_service and "n1" not in cache.by_node
    assert cache.remove("task", "t1").service_id == "s2"
    assert cache.by_service == {} and cache.by_node == {}
    assert cache.remove("task", "t1") is None


def test_task_state_counts_follow_puts_and_removals():
    cache = Cache()
    cache.put("task", pb.Task(id="t1", status=pb.TaskStatus(state=pb.PENDING)))
    cache.put("task", pb.Task(id="t2", status=pb.TaskStatus(state=pb.PENDING)))
    cache.put("task", pb.Task(id="t1", status=pb.TaskStatus(state=pb.RUNNING)))
    assert +cache.task_states == {pb.PENDING: 1, pb.RUNNING: 1}
    cache.remove("task", "t2")
    cache.remove("task", "t2")
    assert +cache.task_states == {pb.RUNNING: 1}
