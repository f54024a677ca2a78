"""The cgroup driver's v2 code against a directory laid out like a cgroup2 mount (no root needed).

It asserts exactly what the driver writes; the real kernel (v1 hierarchies and the cgroup2
`unified` mount of this hybrid host) is exercised in tests/integration/test_runtime_cgroups.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.runtime.cgroups import CgroupDriver, Resources, shares_to_weight
from flotilla.runtime.errors import InvalidArgument


@pytest.fixture
def v2root(tmp_path) -> Path:
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    return root


def test_v2_layout_writes(v2root, unique):
    driver = CgroupDriver(f"flotilla-test-{unique}/nested", v2root)
    assert driver.v2 and driver.v2_available == {"cpu", "memory", "pids"}
    cg = driver.cgroup("c1")
    (v2root / f"flotilla-test-{unique}/nested/c1").mkdir(parents=True)
    (v2root / f"flotilla-test-{unique}/nested/c1/memory.swap.max").write_text("max\n")
    cg.create(Resources(memory=64 << 20, cpus=1.5, cpu_shares=512, pids_limit=42))
    path = v2root / f"flotilla-test-{unique}" / "nested" / "c1"
    assert cg.paths() == (path,)
    for level in (v2root, v2root / f"flotilla-test-{unique}", v2root / f"flotilla-test-{unique}/nested"):
        assert (level / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (path / "memory.max").read_text() == str(64 << 20)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "cpu.max").read_text() == "150000 100000"
    assert (path / "cpu.weight").read_text() == str(shares_to_weight(512))
    assert (path / "pids.max").read_text() == "42"

    (path / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    cg.freeze()
    assert (path / "cgroup.freeze").read_text() == "1" and cg.frozen()
    cg.thaw()
    assert (path / "cgroup.freeze").read_text() == "0" and not cg.frozen()

    (path / "cgroup.procs").write_text("12\n7\n")
    assert cg.pids() == [7, 12]
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cg.oom_kills() == 1
    (path / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (path / "memory.current").write_text("4096\n")
    (path / "pids.current").write_text("2\n")
    stats = cg.stats()
    assert stats == {"cpu_usage_ns": 1_500_000, "cpu_user_ns": 1_000_000, "cpu_system_ns": 500_000,
                     "memory_usage": 4096, "memory_limit": 64 << 20, "pids_current": 2, "pids_limit": 42}


def test_v2_without_controllers_refuses_limits_and_leaves_nothing(v2root, unique):
    (v2root / "cgroup.controllers").write_text("")
    driver = CgroupDriver(f"flotilla-test-{unique}", v2root)
    cg = driver.cgroup("c2")
    with pytest.raises(InvalidArgument, match="memory controller is not enabled"):
        cg.create(Resources(memory=64 << 20))
    assert not cg.exists()
    assert (v2root / "cgroup.subtree_control").read_text() == ""


def test_shares_to_weight_matches_runc():
    assert shares_to_weight(2) == 1 and shares_to_weight(262144) == 10000 and shares_to_weight(1024) == 39


def test_bad_parent_and_name(v2root):
    for parent in ("/abs", "../up", "a/../b", "sp ace", ""):
        with pytest.raises(InvalidArgument, match="invalid cgroup parent"):
            CgroupDriver(parent, v2root)
    with pytest.raises(InvalidArgument, match="invalid cgroup name"):
        CgroupDriver("ok", v2root).cgroup("../x")
