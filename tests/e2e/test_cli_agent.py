"""`swarmd agent` itself: two agents side by side, one agent per root, metrics, health."""
from __future__ import annotations

import socket
import subprocess
import urllib.request

import pytest

from cli_harness import BIN, IMAGE, Agent, shut_down, started_agent

pytestmark = pytest.mark.root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_agents_side_by_side_do_not_touch_each_other(tmp_path, busybox_tar):
    one = started_agent(tmp_path / "one", busybox_tar)
    try:
        two = started_agent(tmp_path / "two", busybox_tar)
        try:
            a = one.ctl("run", "-d", "--name", "same-name", IMAGE, "sleep", "60").stdout.strip()
            b = two.ctl("run", "-d", "--name", "same-name", IMAGE, "sleep", "60").stdout.strip()
            assert one.container_ids() == [a] and two.container_ids() == [b]
            assert (tmp_path / "one" / "state" / "containers" / a).is_dir()
            assert not (tmp_path / "two" / "state" / "containers" / a).exists()
            one.ctl("rm", "-f", "same-name")
            assert two.status("same-name") == "running"
        finally:
            shut_down(two)
    finally:
        shut_down(one)


def test_second_agent_on_the_same_root_is_refused(tmp_path, busybox_tar):
    first = started_agent(tmp_path / "a", busybox_tar)
    try:
        second = subprocess.run(
            [str(BIN / "swarmd"), "agent", "--root", str(first.root / "state"), "--listen-local",
             f"unix://{tmp_path}/other.sock", "--cgroup-parent", f"flotilla-test-{first.suffix}-2"],
            capture_output=True, text=True, timeout=30)
        assert second.returncode == 1 and "another agent is using the state root" in second.stderr
        assert first.ctl("ps").returncode == 0
    finally:
        shut_down(first)


def test_metrics_and_health(tmp_path, busybox_tar):
    port = free_port()
    root = tmp_path / "m"
    root.mkdir()
    agent = Agent(root)
    agent.start_args = ["--metrics-addr", f"127.0.0.1:{port}"]
    agent.start()
    try:
        agent.ctl("image", "import", str(busybox_tar), IMAGE)
        agent.ctl("run", "-d", "--name", "metered", "-m", "32m", IMAGE, "sleep", "60")
        agent.ctl("create", IMAGE, "true")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'flotilla_containers{state="running"} 1.0' in text
        assert 'flotilla_containers{state="created"} 1.0' in text
        assert 'flotilla_container_memory_limit_bytes{id=' in text and "3.3554432e+07" in text
        assert 'flotilla_container_pids{' in text and 'name="metered"' in text
        health = subprocess.run([str(BIN / "python"), "-c", f"""
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
ch = grpc.insecure_channel("unix://{agent.socket}")
print(health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="flotilla.runtime.v1.Runtime")).status)
"""], capture_output=True, text=True, timeout=30)
        assert health.stdout.strip() == "1"  # SERVING
    finally:
        shut_down(agent)
