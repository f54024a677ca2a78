"""/etc/hosts of a running container follows `network connect` / `disconnect` (as in Docker).

A real container (busybox `sleep`, started by the shim) on its own state root, cgroup parent and
network instance; the file is read through the container's own mount namespace
(/proc/<pid>/root), so the test sees what the container sees through its bind mount.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.runtime.netwiring import instance_for
from flotilla.runtime.runtime import Runtime
from flotilla.runtime.spec import ContainerSpec, Mount
from tests.conftest import mounts_containing
from tests.integration.test_network_bridge import leftovers, ten

pytestmark = pytest.mark.root


@pytest.fixture
def rt(tmp_path, unique, busybox_tar):
    root = tmp_path / "root"
    runtime = Runtime(root, cgroup_parent=f"flotilla-test-{unique}", default_subnet=ten())
    runtime.import_image(busybox_tar, "busybox", {"Cmd": ["sh"]})
    yield runtime
    for c in runtime.list(all=True):
        runtime.remove(c.id, force=True)
    for net in runtime.net.nm.networks():
        if not net.builtin:
            runtime.net.nm.remove_network(net.id)
    runtime.close_cgroup_parent()
    runtime.drain()
    runtime.close()
    assert mounts_containing(str(root)) == []
    assert leftovers(instance_for(f"flotilla-test-{unique}")) == []


def etc_hosts(rt: Runtime, cid: str) -> str:
    pid = rt.inspect(cid)["State"]["Pid"]
    return Path(f"/proc/{pid}/root/etc/hosts").read_text()


def entries(text: str) -> list[tuple[str, str]]:
    """(address, name) of the lines a resolver reads (comments and blanks skipped)."""
    out = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and "." in fields[0]:
            out.append((fields[0], fields[1]))
    return out


def test_connect_and_disconnect_update_etc_hosts_of_a_running_container(rt, unique):
    a = rt.net.nm.create_network(f"ha-{unique}", subnet=ten())
    b = rt.net.nm.create_network(f"hb-{unique}", subnet=ten())
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "600"], network_mode=a.name, hostname="web"))
    rt.start(c.id)
    ip_a = rt.inspect(c.id)["NetworkSettings"]["Networks"][a.name]["IPAddress"]
    assert entries(etc_hosts(rt, c.id)) == [("127.0.0.1", "localhost"), (ip_a, "web")]
    pid = rt.inspect(c.id)["State"]["Pid"]
    with open(f"/proc/{pid}/root/etc/hosts", "a") as f:  # an entry the container added itself stays
        f.write("192.0.2.7\tmine\n")

    rt.network_connect(b.name, c.id)
    ip_b = rt.inspect(c.id)["NetworkSettings"]["Networks"][b.name]["IPAddress"]
    assert entries(etc_hosts(rt, c.id)) == [("127.0.0.1", "localhost"), (ip_a, "web"), ("192.0.2.7", "mine"), (ip_b, "web")]

    rt.network_disconnect(a.name, c.id)
    assert entries(etc_hosts(rt, c.id)) == [("127.0.0.1", "localhost"), ("192.0.2.7", "mine"), (ip_b, "web")]

    # a restart writes the file afresh: one line per network it is connected to
    rt.stop(c.id, timeout=0)
    rt.network_connect(a.name, c.id)
    rt.start(c.id)
    now = rt.inspect(c.id)["NetworkSettings"]["Networks"]
    assert entries(etc_hosts(rt, c.id)) == [("127.0.0.1", "localhost"), (now[b.name]["IPAddress"], "web"),
                                            (now[a.name]["IPAddress"], "web")]


def test_a_user_mounted_etc_hosts_is_never_touched(rt, unique, tmp_path):
    a = rt.net.nm.create_network(f"ua-{unique}", subnet=ten())
    b = rt.net.nm.create_network(f"ub-{unique}", subnet=ten())
    mine = tmp_path / "hosts"
    mine.write_text("192.0.2.1\tgateway-of-mine\n")
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "600"], network_mode=a.name,
                                mounts=[Mount(str(mine), "/etc/hosts")]))
    rt.start(c.id)
    rt.network_connect(b.name, c.id)
    rt.network_disconnect(a.name, c.id)
    assert mine.read_text() == "192.0.2.1\tgateway-of-mine\n"
    assert etc_hosts(rt, c.id) == "192.0.2.1\tgateway-of-mine\n"
