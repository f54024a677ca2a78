"""Store write and cache rate: N tasks created with store.batch on a real etcd, then loaded
into a second store's cache from scratch (what a new leader does at start).

Usage: .venv/bin/python bench/store_batch.py [--tasks 100000]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from etcd_server import EtcdServer  # noqa: E402

from flotilla.manager.store import Op, Store  # noqa: E402
from flotilla.proto import objects_pb2 as pb  # noqa: E402


def make_task(i: int) -> pb.Task:
    t = pb.Task(service_id="bench", slot=i, desired_state=pb.RUNNING)
    t.annotations.name = f"bench.{i}"
    t.spec.container.image = "busybox:latest"
    t.spec.container.args.extend(["sleep", "1000"])
    t.status.state = pb.PENDING
    return t


async def run(n: int, endpoint: str) -> None:
    store = Store([endpoint])
    await store.start()
    watcher = Store([endpoint])
    await watcher.start()
    tasks = [make_task(i) for i in range(n)]
    started = time.perf_counter()
    results = await store.batch([Op("create", "task", t) for t in tasks])
    took = time.perf_counter() - started
    assert all(isinstance(r, pb.Task) for r in results), [r for r in results if isinstance(r, Exception)][:3]
    print(f"batch create: {n} tasks in {took:.2f}s = {n / took:,.0f} writes/s")
    started = time.perf_counter()
    while watcher.count("task") < n:
        await asyncio.sleep(0.01)
    print(f"second store's cache (watch) complete {time.perf_counter() - started:.2f}s after the writes returned")
    ops = []
    for r in results:
        t = pb.Task()
        t.CopyFrom(r)
        t.status.state = pb.ASSIGNED
        ops.append(Op("update", "task", t))
    started = time.perf_counter()
    out = await store.batch(ops)
    took = time.perf_counter() - started
    assert all(isinstance(r, pb.Task) for r in out)
    print(f"batch update: {n} tasks in {took:.2f}s = {n / took:,.0f} writes/s")
    await store.close()
    await watcher.close()
    fresh = Store([endpoint])
    started = time.perf_counter()
    await fresh.start()
    took = time.perf_counter() - started
    print(f"load into a fresh cache: {fresh.count('task')} tasks in {took:.2f}s")
    await fresh.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp:
        server = EtcdServer(Path(tmp) / "data", f"bench-{uuid.uuid4().hex[:8]}")
        server.start()
        try:
            asyncio.run(run(args.tasks, server.endpoint))
        finally:
            server.destroy()


if __name__ == "__main__":
    main()
