"""The cgroup driver against the real kernel: v1 hierarchies and the cgroup2 `unified` mount.

This host is hybrid: controllers are on v1, and cgroup2 at /sys/fs/cgroup/unified has none
delegated. On v2 without controllers placement, pids, freezing and cgroup.kill still work;
limits are refused with a clear error (checked below).
"""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from flotilla.runtime.cgroups import CgroupDriver, Resources
from flotilla.runtime.errors import InvalidArgument

pytestmark = pytest.mark.root
UNIFIED = Path("/sys/fs/cgroup/unified")


def leftovers(unique: str) -> list[Path]:
    return list(Path("/sys/fs/cgroup").glob(f"*/flotilla-test-{unique}*"))


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def join(paths: list[Path], pid: int) -> None:
    for p in paths:
        (p / "cgroup.procs").write_text(str(pid))


def test_v1_hybrid_full_cycle(unique, sleeper):
    driver = CgroupDriver(f"flotilla-test-{unique}")
    assert not driver.v2 and {"memory", "cpu", "cpuacct", "pids", "freezer", "cpuset", "unified"} <= set(driver.hierarchies)
    cg = driver.cgroup("c1")
    try:
        cg.create(Resources(memory=64 << 20, cpus=0.5, cpu_shares=512, pids_limit=33))
        mem = Path("/sys/fs/cgroup/memory") / f"flotilla-test-{unique}" / "c1"
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert (mem / "memory.memsw.limit_in_bytes").read_text().strip() == str(64 << 20)
        cpu = Path("/sys/fs/cgroup/cpu") / f"flotilla-test-{unique}" / "c1"
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.shares").read_text().strip() == "512"
        assert (Path("/sys/fs/cgroup/pids") / f"flotilla-test-{unique}" / "c1" / "pids.max").read_text().strip() == "33"
        join(cg.paths(), sleeper.pid)
        assert cg.pids() == [sleeper.pid]
        cg.freeze()
        assert cg.frozen()
        cg.thaw()
        assert not cg.frozen()
        stats = cg.stats()
        assert stats["memory_limit"] == 64 << 20 and stats["pids_current"] == 1 and stats["pids_limit"] == 33
        assert cg.oom_kills() == 0  # (usage stays 0 here: memory charged before the move is not moved)
        cg.freeze()  # destroy must also kill a frozen cgroup
        cg.destroy()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not cg.exists()
    finally:
        if cg.exists():
            cg.destroy()
        driver.remove_parent()
    assert leftovers(unique) == []


def test_v2_unified_without_controllers(unique, sleeper):
    driver = CgroupDriver(f"flotilla-test-{unique}", UNIFIED)
    assert driver.v2 and driver.v2_available == set()
    cg = driver.cgroup("c2")
    try:
        with pytest.raises(InvalidArgument, match="memory controller is not enabled"):
            cg.create(Resources(memory=64 << 20))
        assert not cg.exists()
        cg.create(Resources())
        join(cg.paths(), sleeper.pid)
        assert cg.pids() == [sleeper.pid]
        cg.freeze()
        assert cg.frozen() and "frozen 1" in (cg.paths()[0] / "cgroup.events").read_text()
        cg.thaw()
        assert cg.stats()["cpu_usage_ns"] >= 0
        cg.destroy()  # through cgroup.kill
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
    finally:
        if cg.exists():
            cg.destroy()
        driver.remove_parent()
    assert not (UNIFIED / f"flotilla-test-{unique}").exists()


def test_parent_removed_behind_the_drivers_back_is_recreated(unique, sleeper):
    """The parent chain is made once per driver; if it vanished meanwhile, the next create remakes it."""
    driver = CgroupDriver(f"flotilla-test-{unique}")
    first, second = driver.cgroup("first"), driver.cgroup("second")
    try:
        first.create(Resources())
        first.destroy()
        assert not first.exists() and driver.parent_ready
        for hier in dict.fromkeys(driver.hierarchies.values()):
            (hier / driver.parent).rmdir()  # as an administrator's cleanup would
        second.create(Resources(pids_limit=7))
        join(second.paths(), sleeper.pid)
        assert second.pids() == [sleeper.pid] and second.stats()["pids_limit"] == 7
        cpuset = driver.hierarchies.get("cpuset")
        if cpuset is not None:  # copied from the recreated parent, so the join above worked
            assert (cpuset / driver.parent / "second" / "cpuset.cpus").read_text().strip()
        second.destroy()  # busy: rmdir is refused, the kill path removes it
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not second.exists()
    finally:
        for cg in (first, second):
            if cg.exists():
                cg.destroy()
        driver.remove_parent()
    assert leftovers(unique) == []
