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
