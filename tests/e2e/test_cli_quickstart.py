"""`make run` / `make stop` (swarmd/quickstart.py) on a private root, socket and cgroup parent."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from cli_harness import BIN, Agent, wait_for
from docker_engine import alive, children
from flotilla.swarmd import quickstart

pytestmark = pytest.mark.root


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_quickstart_starts_agent_runs_demo_and_stops(tmp_path, unique):
    root, sock, parent = tmp_path / "root", tmp_path / "qs.sock", f"flotilla-test-{unique}"
    control = tmp_path / "control.sock"
    quickstart = [str(BIN / "python"), "-m", "flotilla.swarmd.quickstart", "--root", str(root),
                  "--control-socket", str(control), "--listen-remote", f"127.0.0.1:{free_port()}"]
    try:
        first = subprocess.run([*quickstart, "--socket", str(sock), "--cgroup-parent", parent],
                               capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert "agent started" in first.stdout and "hello from a Flotilla container" in first.stdout
        assert "swarmctl" in first.stdout and "run -it --rm busybox:latest sh" in first.stdout
        assert first.stdout.count("Running") >= 3  # `swarmctl service ps web`: the 3 replicas run
        again = subprocess.run([*quickstart, "--socket", str(sock), "--cgroup-parent", parent],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "agent already running" in again.stdout
        images = subprocess.run([str(BIN / "swarmctl"), "-H", f"unix://{sock}", "images"],
                                capture_output=True, text=True, timeout=60)
        assert images.stdout.count("busybox") == 1  # imported once
    finally:
        try:  # the service's containers outlive `make stop` by design: remove the service first
            subprocess.run([str(BIN / "swarmctl"), "service", "rm", "-m", f"unix://{control}", "web"],
                           capture_output=True, timeout=60)
            ps = [str(BIN / "swarmctl"), "-H", f"unix://{sock}", "ps", "-aq"]
            wait_for(lambda: not subprocess.run(ps, capture_output=True, text=True, timeout=60).stdout.split(), 30,
                     what="the service's containers to be removed")
        finally:
            stopped = subprocess.run([*quickstart, "--stop"], capture_output=True, text=True, timeout=60)
        agent = Agent(tmp_path, unique)  # only for its leak check: same root, cgroup parent
        agent.root, agent.cgroup_parent = root, parent
        agent.remove_cgroup_parents()
    assert stopped.returncode == 0 and "agent stopped" in stopped.stdout
    assert not sock.exists()
    assert not agent.leaks()


def test_all_in_one_children_die_with_it_on_kill_9(tmp_path, unique):
    """etcd, manager and agent are started wrapped in `setpriv --pdeathsig`: a kill -9 of all-in-one
    takes all three down (no Python runs between fork and exec, so a threaded parent cannot hang them)."""
    root, sock, control = tmp_path / "root", tmp_path / "a.sock", tmp_path / "c.sock"
    parent = f"flotilla-test-{unique}"
    pid = quickstart.start_agent(root, str(sock), parent, str(control), f"127.0.0.1:{free_port()}")
    try:
        parts = children(pid)
        assert len(parts) == 3, [Path(f"/proc/{p}/cmdline").read_bytes() for p in parts]  # etcd, manager, agent
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    try:
        wait_for(lambda: not any(alive(p) for p in parts), 30, what="all-in-one's parts to exit")
    finally:
        for part in filter(alive, parts):  # only when the test fails: leave nothing running
            os.kill(part, signal.SIGKILL)
    agent = Agent(tmp_path, unique)
    agent.root, agent.cgroup_parent = root, parent
    agent.remove_cgroup_parents()
    assert not agent.leaks()
