"""Starts and removals run partly outside the runtime's lock, so that many containers start or
go at once (the cluster agent converging hundreds of tasks). These tests hold a start or a
removal in its unlocked part and check what everybody else sees meanwhile: the container is
"created" (starting) or "removing", a second start or remove of it is refused, and any other
container can be created, started and removed without waiting.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flotilla.runtime import runtime as runtime_module
from flotilla.runtime.errors import Conflict, NotFound
from flotilla.runtime.runtime import Runtime
from flotilla.runtime.spec import ContainerSpec
from tests.conftest import mounts_containing
from tests.integration.test_runtime_containers import processes_mentioning, subnet_for

pytestmark = pytest.mark.root


@pytest.fixture
def rt(tmp_path, unique, busybox_tar):
    root = tmp_path / "root"
    runtime = Runtime(root, cgroup_parent=f"flotilla-test-{unique}", default_subnet=subnet_for(unique))
    runtime.import_image(busybox_tar, "busybox", {"Cmd": ["sh"]})
    yield runtime
    for c in runtime.list(all=True):
        runtime.remove(c.id, force=True)
    runtime.close_cgroup_parent()
    runtime.drain()
    runtime.close()
    assert list(Path("/sys/fs/cgroup").glob(f"*/flotilla-test-{unique}")) == []
    assert mounts_containing(str(root)) == []
    assert processes_mentioning(str(root)) == []


def sleeper(rt: Runtime, name: str) -> str:
    return rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"], network_mode="none", name=name)).id


class Gate:
    """Holds the first call of a function that runs outside the lock until `open()`."""

    def __init__(self, real) -> None:
        self.real = real
        self.entered = threading.Event()
        self._open = threading.Event()
        self._used = False

    def __call__(self, *args, **kwargs):
        if not self._used:
            self._used = True
            self.entered.set()
            assert self._open.wait(30)
        return self.real(*args, **kwargs)

    def open(self) -> None:
        self._open.set()


def test_others_go_on_while_a_start_is_in_its_shim(rt, unique, monkeypatch):
    held = sleeper(rt, f"held-{unique}")
    other = sleeper(rt, f"other-{unique}")
    gate = Gate(runtime_module.shim.run)
    monkeypatch.setattr(runtime_module.shim, "run", gate)
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(rt.start, held)
        assert gate.entered.wait(30)
        assert rt.get(held).status == "created"
        with pytest.raises(Conflict, match="busy"):
            rt.start(held)
        with pytest.raises(Conflict, match="busy"):
            rt.remove(held, force=True)
        rt.start(other)  # the lock is free: another container starts meanwhile
        assert rt.get(other).status == "running"
        gate.open()
        starting.result(30)
    assert rt.get(held).status == "running"
    assert rt.get(held).pid > 0


def test_others_go_on_while_a_removal_releases_the_network(rt, unique, monkeypatch):
    held = sleeper(rt, f"held-{unique}")
    other = sleeper(rt, f"other-{unique}")
    rt.start(held)
    gate = Gate(rt.net.release)
    monkeypatch.setattr(rt.net, "release", gate)
    with ThreadPoolExecutor(1) as pool:
        removing = pool.submit(rt.remove, held, True)
        assert gate.entered.wait(30)
        assert rt.get(held).status == "removing"
        with pytest.raises(Conflict, match="busy"):
            rt.start(held)
        with pytest.raises(Conflict, match="busy"):
            rt.remove(held, force=True)
        rt.start(other)
        assert rt.get(other).status == "running"
        gate.open()
        removing.result(30)
    with pytest.raises(NotFound):
        rt.get(held)


def test_many_concurrent_starts_and_removals(rt, unique):
    ids = [sleeper(rt, f"c{i}-{unique}") for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(rt.start, ids))
    assert sorted(c.id for c in rt.list()) == sorted(ids)
    assert all(c.status == "running" and c.pid > 0 for c in rt.list())
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda cid: rt.remove(cid, force=True), ids))
    assert rt.list(all=True) == []
