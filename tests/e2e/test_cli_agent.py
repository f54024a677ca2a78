"""`swarmd agent` itself: two agents side by side, one agent per root, metrics, health."""
from __future__ import annotations

import socket
import subprocess
import urllib.request

import pytest

from cli_harness import BIN, IMAGE, Agent, shut_down, wait_for

pytestmark = pytest.mark.root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, busybox_tar):
    """Two agents on one machine; the first also serves metrics on a free loopback port."""
    agents = []
    try:
        for name, extra in (("one", ["--metrics-addr", f"127.0.0.1:{free_port()}"]), ("two", [])):
            root = tmp_path_factory.mktemp(name)
            agent = Agent(root)
            agent.start_args = extra
            agents.append(agent)
            agent.start()
            agent.ctl("image", "import", str(busybox_tar), IMAGE)
        yield agents
    finally:
        for agent in agents:
            shut_down(agent)


@pytest.fixture
def clean(pair):
    yield
    for agent in pair:
        agent.cleanup()
        wait_for(lambda: not agent.leaks(), 10, what="the test's containers to leave nothing behind")


def test_two_agents_side_by_side_do_not_touch_each_other(pair, clean):
    one, two = pair
    a = one.ctl("run", "-d", "--name", "same-name", IMAGE, "sleep", "60").stdout.strip()
    b = two.ctl("run", "-d", "--name", "same-name", IMAGE, "sleep", "60").stdout.strip()
    assert one.container_ids() == [a] and two.container_ids() == [b]
    assert (one.root / "state" / "containers" / a).is_dir()
    assert not (two.root / "state" / "containers" / a).exists()
    one.ctl("rm", "-f", "same-name")
    assert two.status("same-name") == "running"


def test_second_agent_on_the_same_root_is_refused(pair, clean, tmp_path):
    one = pair[0]
    second = subprocess.run(
        [str(BIN / "swarmd"), "agent", "--root", str(one.root / "state"), "--listen-local",
         f"unix://{tmp_path}/other.sock", "--cgroup-parent", f"{one.cgroup_parent}-2"],
        capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "another agent is using the state root" in second.stderr
    assert not (tmp_path / "other.sock").exists()
    assert one.ctl("ps").returncode == 0


def test_metrics_and_health(pair, clean):
    one = pair[0]
    port = one.start_args[1].rpartition(":")[2]
    one.ctl("run", "-d", "--name", "metered", "-m", "32m", IMAGE, "sleep", "60")
    one.ctl("create", IMAGE, "true")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'flotilla_containers{state="running"} 1.0' in text
    assert 'flotilla_containers{state="created"} 1.0' in text
    assert "flotilla_container_memory_limit_bytes{id=" in text and "3.3554432e+07" in text
    assert "flotilla_container_pids{" in text and 'name="metered"' in text
    health = subprocess.run([str(BIN / "python"), "-c", f"""
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
ch = grpc.insecure_channel("unix://{one.socket}")
print(health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="flotilla.runtime.v1.Runtime")).status)
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
print(" ".join(sorted(ProtoReflectionDescriptorDatabase(ch).get_services())))
"""], capture_output=True, text=True, timeout=30)
    status, services = health.stdout.splitlines()
    assert status == "1"  # SERVING
    assert "flotilla.runtime.v1.Runtime" in services.split() and "grpc.health.v1.Health" in services.split()
