"""The store against a real etcd: CAS, batching within etcd's limits, cache and events, watch
resume across an etcd restart, the leader guard."""
from __future__ import annotations

import asyncio

import pytest

from flotilla.manager.store import Conflict, NotFound, NotLeader, Op, Store
from flotilla.proto import objects_pb2 as pb

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(120)]


def task(i: int, service: str = "svc", node: str = "") -> pb.Task:
    t = pb.Task(service_id=service, node_id=node, slot=i, desired_state=pb.RUNNING)
    t.annotations.name = f"svc.{i}"
    t.spec.container.image = "busybox"
    t.spec.container.env.append("X=" + "y" * 200)
    return t


async def drain(queue: asyncio.Queue) -> list:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def test_cas_create_update_delete(etcd_endpoint):
    async def main():
        store = Store([etcd_endpoint])
        await store.start()
        events = store.subscribe({"service"})
        try:
            svc = pb.Service()
            svc.spec.annotations.name = "web"
            created = await store.create("service", svc)
            assert created.id and created.meta.version.index > 0
            assert store.get("service", created.id) is created
            assert store.find("service", "web") is created
            assert store.find("service", created.id[:6]) is created
            with pytest.raises(Conflict):
                await store.create("service", created)  # version 0 of an existing id
            upd = pb.Service()
            upd.CopyFrom(created)
            upd.spec.annotations.labels["a"] = "b"
            updated = await store.update("service", upd)
            assert updated.meta.version.index > created.meta.version.index
            with pytest.raises(Conflict, match="out of sequence"):
                await store.update("service", upd)  # stale version
            assert store.get("service", created.id).spec.annotations.labels["a"] == "b"
            with pytest.raises(Conflict):
                await store.delete("service", created.id, version=created.meta.version.index)
            await store.delete("service", created.id, version=updated.meta.version.index)
            assert store.get("service", created.id) is None
            with pytest.raises(NotFound):
                await store.delete("service", created.id)
            with pytest.raises(NotFound):
                store.find("service", "web")
            await asyncio.sleep(0.3)  # let the watch echo our own writes: they must not repeat
            actions = [e.action for e in await drain(events)]
            assert actions == ["create", "update", "delete"]
        finally:
            await store.close()
    asyncio.run(main())


def test_batch_splits_and_isolates_conflicts(etcd_endpoint):
    async def main():
        store = Store([etcd_endpoint])
        await store.start()
        other = Store([etcd_endpoint])
        await other.start()
        try:
            results = await store.batch([Op("create", "task", task(i, node=f"n{i % 3}")) for i in range(1000)])
            assert all(isinstance(r, pb.Task) for r in results)
            assert len(store.tasks_of_service("svc")) == 1000
            assert len(store.tasks_of_node("n1")) == 333
            await wait_for(lambda: other.count("task") == 1000)
            # a stale op in the middle does not stop the others
            stale = pb.Task()
            stale.CopyFrom(results[5])
            await store.update("task", stale)  # bumps the version; `results[5]` is now stale
            ops = []
            for r in results[:10]:
                t = pb.Task()
                t.CopyFrom(r)
                t.node_id = "moved"
                ops.append(Op("update", "task", t))
            out = await store.batch(ops)
            assert isinstance(out[5], Conflict)
            assert all(isinstance(r, pb.Task) for i, r in enumerate(out) if i != 5)
            assert len(store.tasks_of_node("moved")) == 9
            await wait_for(lambda: len(other.tasks_of_node("moved")) == 9)
            # a big value: several transactions by size, not only by count
            big = [task(i) for i in range(20)]
            for t in big:
                t.spec.container.env.append("B=" + "z" * 200_000)
            assert all(isinstance(r, pb.Task) for r in await store.batch([Op("create", "task", t) for t in big]))
            # deletes, by id and by object
            out = await store.batch([Op("delete", "task", r.id) for r in results[100:200]] +
                                    [Op("delete", "task", r) for r in results[200:300]])
            assert out == [None] * 200
            await wait_for(lambda: other.count("task") == 1020 - 200)
            assert store.count("task") == 820
        finally:
            await store.close()
            await other.close()
    asyncio.run(main())


def test_watch_resumes_after_etcd_restart(etcd):
    async def main():
        watcher = Store([etcd.endpoint])
        await watcher.start()
        events = watcher.subscribe()
        try:
            writer = Store([etcd.endpoint])
            await writer.start()
            first = await writer.create("node", pb.Node())
            await wait_for(lambda: watcher.get("node", first.id) is not None)
            await writer.close()
            await asyncio.get_running_loop().run_in_executor(None, etcd.restart)
            writer = Store([etcd.endpoint])
            await writer.start()
            second = await writer.create("node", pb.Node())
            n = pb.Node()
            n.CopyFrom(first)
            n.status.state = pb.NodeStatus.READY
            await writer.update("node", n)
            await writer.close()
            await wait_for(lambda: watcher.get("node", second.id) is not None
                           and watcher.get("node", first.id).status.state == pb.NodeStatus.READY)
            seen = [(e.action, e.obj.id) for e in await drain(events)]
            assert seen == [("create", first.id), ("create", second.id), ("update", first.id)]
        finally:
            await watcher.close()
    asyncio.run(main())


def test_leader_guard(etcd_endpoint):
    async def main():
        store = Store([etcd_endpoint])
        await store.start()
        try:
            out = await store.batch([Op("create", "node", pb.Node())], leader_guard=True)
            assert isinstance(out[0], NotLeader)
            assert store.count("node") == 0
            from aetcd import rpc
            key = b"/test-leader"
            put = await store.kv.Put(rpc.PutRequest(key=key, value=b"me"))
            store.set_leader_guard(key, put.header.revision)
            out = await store.batch([Op("create", "node", pb.Node())], leader_guard=True)
            assert isinstance(out[0], pb.Node)
            await store.kv.DeleteRange(rpc.DeleteRangeRequest(key=key))
            out = await store.batch([Op("create", "node", pb.Node())], leader_guard=True)
            assert isinstance(out[0], NotLeader)
            assert store.count("node") == 1
        finally:
            await store.close()
    asyncio.run(main())


def test_ops_on_one_key_commit_in_order(etcd_endpoint):
    async def main():
        store = Store([etcd_endpoint])
        await store.start()
        try:
            first = await store.create("node", pb.Node())
            ops = [Op("create", "node", pb.Node()) for _ in range(300)]
            ops.append(Op("delete", "node", first.id))
            ops.append(Op("create", "node", pb.Node(id=first.id)))
            out = await store.batch(ops)
            assert all(not isinstance(r, Exception) for r in out), [r for r in out if isinstance(r, Exception)]
            assert store.get("node", first.id).meta.version.index > first.meta.version.index
            assert store.count("node") == 301
        finally:
            await store.close()
    asyncio.run(main())
