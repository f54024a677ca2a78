"""`make run` / `make stop` (swarmd/quickstart.py) on a private root, socket and cgroup parent."""
from __future__ import annotations

import subprocess

import pytest

from cli_harness import BIN, Agent

pytestmark = pytest.mark.root


def test_quickstart_starts_agent_runs_demo_and_stops(tmp_path, unique):
    root, sock, parent = tmp_path / "root", tmp_path / "qs.sock", f"flotilla-test-{unique}"
    quickstart = [str(BIN / "python"), "-m", "flotilla.swarmd.quickstart", "--root", str(root)]
    try:
        first = subprocess.run([*quickstart, "--socket", str(sock), "--cgroup-parent", parent],
                               capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert "agent started" in first.stdout and "hello from a Flotilla container" in first.stdout
        assert "swarmctl" in first.stdout and "run -it --rm busybox:latest sh" in first.stdout
        again = subprocess.run([*quickstart, "--socket", str(sock), "--cgroup-parent", parent],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "agent already running" in again.stdout
        images = subprocess.run([str(BIN / "swarmctl"), "-H", f"unix://{sock}", "images"],
                                capture_output=True, text=True, timeout=60)
        assert images.stdout.count("busybox") == 1  # imported once
    finally:
        stopped = subprocess.run([*quickstart, "--stop"], capture_output=True, text=True, timeout=60)
        agent = Agent(tmp_path, unique)  # only for its leak check: same root, cgroup parent
        agent.root, agent.cgroup_parent = root, parent
        agent.remove_cgroup_parents()
    assert stopped.returncode == 0 and "agent stopped" in stopped.stdout
    assert not sock.exists()
    assert not agent.leaks()
