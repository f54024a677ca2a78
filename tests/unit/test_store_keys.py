"""The store's pure parts: key layout, endpoint parsing, splitting a batch into transactions."""
from __future__ import annotations

import pytest

from flotilla.manager.store import InvalidArgument, Op, Store, name_of
from flotilla.manager.store.keys import object_key, prefix_end, split_key
from flotilla.manager.store.store import MAX_TXN_BYTES, MAX_TXN_OPS, endpoint_target
from flotilla.proto import objects_pb2 as pb


def test_prefix_end_covers_exactly_the_prefix():
    end = prefix_end(b"/flotilla/v1/")
    assert end == b"/flotilla/v10"
    assert b"/flotilla/v1/task/x" < end and not b"/flotilla/v1/" >= end
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_keys_round_trip_and_ignore_non_objects():
    key = object_key("/p/", "task", "abc")
    assert key == b"/p/task/abc"
    assert split_key(b"/p/", key) == ("task", "abc")
    assert split_key(b"/p/", b"/p/leader") is None
    assert split_key(b"/p/", b"/p/managers/m1") is None
    assert split_key(b"/p/", b"/p/task/") is None


def test_endpoint_target():
    assert endpoint_target(["http://127.0.0.1:2379"]) == "127.0.0.1:2379"
    assert endpoint_target(["http://10.0.0.1:2379", "10.0.0.2:2379/"]) == "ipv4:10.0.0.1:2379,10.0.0.2:2379"
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        endpoint_target(["http://localhost"])
    with pytest.raises(InvalidArgument, match="no etcd endpoint"):
        endpoint_target([])


def _prepared(store: Store, ops: list[Op]):
    from google.protobuf.timestamp_pb2 import Timestamp
    return [store._prepare(i, op, Timestamp()) for i, op in enumerate(ops)]


def test_chunks_respect_count_size_and_unique_keys():
    store = Store(["http://127.0.0.1:1"])
    small = [Op("create", "task", pb.Task(id=f"t{i}")) for i in range(300)]
    chunks = list(store._chunks(_prepared(store, small)))
    assert [len(c) for c in chunks] == [MAX_TXN_OPS, MAX_TXN_OPS, 300 - 2 * MAX_TXN_OPS]
    big = []
    for i in range(5):
        t = pb.Task(id=f"b{i}")
        t.spec.container.env.append("X=" + "y" * 600_000)
        big.append(Op("create", "task", t))
    chunks = list(store._chunks(_prepared(store, big)))
    assert all(sum(p.size for p in c) <= MAX_TXN_BYTES for c in chunks) and len(chunks) == 3
    same = [Op("update", "task", pb.Task(id="same", meta=pb.Meta(version=pb.Version(index=3)))),
            Op("delete", "task", "same")]
    assert [len(c) for c in store._chunks(_prepared(store, same))] == [1, 1]


def test_prepare_refuses_bad_ops():
    store = Store(["http://127.0.0.1:1"])
    with pytest.raises(InvalidArgument, match="unknown kind"):
        _prepared(store, [Op("create", "widget", pb.Task())])
    with pytest.raises(InvalidArgument, match="expected a Task"):
        _prepared(store, [Op("create", "task", pb.Node())])
    with pytest.raises(InvalidArgument, match="no id"):
        _prepared(store, [Op("update", "task", pb.Task())])
    with pytest.raises(InvalidArgument, match="must end with"):
        Store(["http://127.0.0.1:1"], prefix="/x")


def test_prepare_fills_id_and_times_and_does_not_touch_the_input():
    store = Store(["http://127.0.0.1:1"])
    task = pb.Task(service_id="s")
    p = _prepared(store, [Op("create", "task", task)])[0]
    assert p.obj.id and len(p.obj.id) == 25 and p.expect == 0
    assert task.id == "" and not task.HasField("meta")


def test_names_and_find():
    store = Store(["http://127.0.0.1:1"])
    node = pb.Node(id="abc123")
    node.description.hostname = "host1"
    assert name_of("node", node) == "host1"
    node.spec.annotations.name = "named"
    assert name_of("node", node) == "named"
    for i, obj_id in enumerate(["aaa111", "aaa222", "bbb333"]):
        s = pb.Service(id=obj_id)
        s.spec.annotations.name = f"svc{i}"
        store._cache.put("service", s)
    assert store.find("service", "bbb").id == "bbb333"
    assert store.find("service", "svc1").id == "aaa222"
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.find("service", "aaa")
    with pytest.raises(Exception, match="no such service"):
        store.find("service", "zzz")
