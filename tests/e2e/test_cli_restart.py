"""Restart policies enforced by the agent's monitor, and adoption after `kill -9` of the agent."""
from __future__ import annotations

import subprocess
import time

import pytest

from cli_harness import BIN, IMAGE, agent, ctl, wait_for  # noqa: F401  (fixtures)

pytestmark = pytest.mark.root


def restart_count(agent, ref: str) -> int:
    return agent.inspect(ref)["RestartCount"]


def test_on_failure_restarts_n_times_then_stays_exited(ctl, agent):
    cid = ctl("run", "-d", "--restart", "on-failure:2", IMAGE, "sh", "-c", "exit 3").stdout.strip()
    wait_for(lambda: restart_count(agent, cid) == 2 and agent.status(cid) == "exited", 15,
             what="two restarts")
    time.sleep(1.0)  # back-off would have fired by now
    assert restart_count(agent, cid) == 2 and agent.status(cid) == "exited"
    assert agent.inspect(cid)["State"]["ExitCode"] == 3


def test_on_failure_does_not_restart_success(ctl, agent):
    cid = ctl("run", "-d", "--restart", "on-failure", IMAGE, "true").stdout.strip()
    assert ctl("wait", cid).stdout == "0\n"
    time.sleep(0.5)
    assert restart_count(agent, cid) == 0 and agent.status(cid) == "exited"


def test_always_restarts_until_stopped(ctl, agent):
    cid = ctl("run", "-d", "--restart", "always", IMAGE, "sh", "-c", "sleep 0.2").stdout.strip()
    wait_for(lambda: restart_count(agent, cid) >= 2, 15, what="restarts of an always container")
    ctl("stop", "-t", "1", cid)
    count = restart_count(agent, cid)
    time.sleep(1.5)
    assert agent.status(cid) == "exited" and restart_count(agent, cid) == count


def test_unless_stopped_not_after_stop(ctl, agent):
    cid = ctl("run", "-d", "--restart", "unless-stopped", IMAGE, "sleep", "60").stdout.strip()
    ctl("stop", "-t", "1", cid)
    time.sleep(1.0)
    assert agent.status(cid) == "exited" and restart_count(agent, cid) == 0


def test_rm_flag_removes_detached_container_on_exit(ctl, agent):
    cid = ctl("run", "-d", "--rm", IMAGE, "sh", "-c", "sleep 0.3").stdout.strip()
    wait_for(lambda: cid not in agent.container_ids(), 10, what="auto-removal")


def test_adoption_after_agent_kill9(ctl, agent):
    """kill -9 the agent: containers keep running; a new agent adopts them and enforces policies."""
    sleeper = ctl("run", "-d", "--name", f"adopt-{agent.suffix}", IMAGE, "sh", "-c",
                  "echo before; sleep 60").stdout.strip()
    flaky = ctl("run", "-d", "--restart", "always", IMAGE, "sleep", "1").stdout.strip()
    ephemeral = ctl("run", "-d", "--rm", IMAGE, "sleep", "1").stdout.strip()
    pid = agent.inspect(sleeper)["State"]["Pid"]
    agent.kill9()
    time.sleep(1.5)  # `flaky` and `ephemeral` exit while no agent runs
    assert open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"sleep")  # still running without the agent
    agent.start()
    assert agent.status(sleeper) == "running" and agent.inspect(sleeper)["State"]["Pid"] == pid
    assert sleeper[:12] in ctl("ps", "-q").stdout.split()
    assert ctl("logs", sleeper).stdout == "before\n"
    assert ctl("exec", sleeper, "echo", "exec-after-adoption").stdout == "exec-after-adoption\n"
    wait_for(lambda: restart_count(agent, flaky) >= 1, 15, what="the always container to restart after the agent did")
    wait_for(lambda: ephemeral not in agent.container_ids(), 10, what="the --rm container to be removed")
    ctl("stop", "-t", "1", sleeper)
    assert agent.status(sleeper) == "exited"


def test_agent_stops_with_a_log_follower_and_the_next_one_adopts(ctl, agent):
    """SIGTERM ends the agent even while a `logs -f` blocks on a silent container."""
    cid = ctl("run", "-d", IMAGE, "sh", "-c", "echo hello; exec sleep 60").stdout.strip()
    follower = subprocess.Popen([str(BIN / "swarmctl"), "logs", "-f", cid], env=agent.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follower.stdout.readline() == b"hello\n"  # following, and now waiting for more
        agent.proc.terminate()
        agent.proc.wait(30)  # a liveness bound, not a performance threshold
        assert follower.wait(30) != 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    agent.start()
    assert agent.status(cid) == "running"


def test_backoff_shows_as_restarting(ctl, agent):
    """Back-off doubles from 100 ms: after a few quick failures the wait is long enough to see."""
    cid = ctl("run", "-d", "--restart", "always", IMAGE, "false").stdout.strip()
    wait_for(lambda: agent.inspect(cid)["State"].get("Restarting") is True, 20, what="a visible back-off")
    wait_for(lambda: "Restarting (1)" in ctl("ps", "-a").stdout, 20, what="ps to show the back-off")
    ctl("stop", "-t", "1", cid)
    wait_for(lambda: agent.status(cid) == "exited", 10, what="stop to end the restart loop")
    count = restart_count(agent, cid)
    time.sleep(1.0)
    assert restart_count(agent, cid) == count
