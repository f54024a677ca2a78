"""`swarmctl run` end to end: output and exit codes, isolation, limits, a real pty, bad input."""
from __future__ import annotations

import os
import subprocess

import pytest

from cli_harness import BIN, IMAGE, agent, ctl, drive_pty, wait_for  # noqa: F401  (fixtures)

pytestmark = pytest.mark.root

DOCKER_DEFAULT_CAPS = "00000000a80425fb"


def test_run_prints_output_and_exits_with_the_container_code(ctl, agent):
    res = ctl("run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    wait_for(lambda: not agent.container_ids(), what="--rm to remove the container")


def test_run_detached_prints_id_and_keeps_running(ctl, agent):
    cid = ctl("run", "-d", "--name", f"bg-{agent.suffix}", IMAGE, "sleep", "60").stdout.strip()
    assert len(cid) == 64
    assert agent.status(cid) == "running"
    assert ctl("ps", "-q").stdout.split() == [cid[:12]]


def test_isolation_seen_from_inside(ctl):
    script = ("echo pid=$$; hostname; ps -o pid | wc -l; "
              "touch /sys/x 2>/dev/null && echo sys-writable || echo sys-ro; "
              "cat /proc/kcore | wc -c; grep CapEff /proc/self/status; "
              "mount -t tmpfs none /mnt 2>/dev/null && echo mounted || echo mount-denied")
    res = ctl("run", "--rm", "-h", "box", IMAGE, "sh", "-c", script)
    lines = res.stdout.split("\n")
    assert lines[0] == "pid=1"
    assert lines[1] == "box"
    assert int(lines[2]) <= 4  # header, sh, ps, wc: no host process is visible
    assert lines[3] == "sys-ro"
    assert lines[4].strip() == "0"  # masked
    assert lines[5].split() == ["CapEff:", DOCKER_DEFAULT_CAPS]
    assert lines[6] == "mount-denied"


def test_env_workdir_user_and_entrypoint(ctl, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("FROM_FILE=1\n")
    res = ctl("run", "--rm", "-e", "A=b c", "--env-file", str(env_file), "-w", "/tmp/work", "-u", "1000",
              IMAGE, "sh", "-c", 'echo "$A|$FROM_FILE|$(pwd)|$(id -u)"')
    assert res.stdout == "b c|1|/tmp/work|1000\n"
    res = ctl("run", "--rm", "--entrypoint", "/bin/echo", IMAGE, "via", "entrypoint")
    assert res.stdout == "via entrypoint\n"


def test_bind_mount_read_only_and_read_only_rootfs(ctl, tmp_path):
    (tmp_path / "in.txt").write_text("host data\n")
    res = ctl("run", "--rm", "-v", f"{tmp_path}:/data:ro", "--read-only", IMAGE, "sh", "-c",
              "cat /data/in.txt; touch /data/x 2>/dev/null || echo bind-ro; touch /x 2>/dev/null || echo root-ro")
    assert res.stdout == "host data\nbind-ro\nroot-ro\n"


def test_memory_limit_oom_kills(ctl, agent):
    name = f"oom-{agent.suffix}"
    res = ctl("run", "--name", name, "-m", "16m", IMAGE, "sh", "-c", "head -c 200m /dev/zero | tail", check=False)
    assert res.returncode == 137
    # the runtime records OOMKilled when it finalizes the exit, which may trail the exit frame
    wait_for(lambda: agent.inspect(name)["State"]["OOMKilled"] is True, 10, what="OOMKilled in inspect")
    assert agent.inspect(name)["State"]["ExitCode"] == 137


def test_pids_limit_stops_forks(ctl):
    res = ctl("run", "--rm", "--pids-limit", "5", IMAGE, "sh", "-c",
              "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done 2>/dev/null; wait; "
              "ps -o pid | wc -l", check=False)
    assert int(res.stdout.strip() or 0) <= 6


def test_interactive_tty_run(agent):
    """`run -it busybox sh` through a real pty: the prompt, our typing, `hi`, exit code 3."""
    output, code = drive_pty(agent, ["run", "-it", "--rm", IMAGE, "sh"], b"echo hi; exit 3\r")
    assert b"\r\nhi\r\n" in output, output
    assert code == 3
    wait_for(lambda: not agent.container_ids(), what="--rm to remove the container")


def test_exec_it_gets_a_terminal_of_the_right_size(ctl, agent):
    cid = ctl("run", "-d", IMAGE, "sleep", "60").stdout.strip()
    output, code = drive_pty(agent, ["exec", "-it", cid, "sh"], b"stty -a | head -1; tty; exit 5\r")
    assert code == 5
    assert b"rows 24; columns 80;" in output and b"/dev/pts/" in output, output


def test_interactive_stdin_without_tty(ctl):
    res = ctl("run", "-i", "--rm", IMAGE, "sh", "-c", "tr a-z A-Z", input="hello\n")
    assert res.stdout == "HELLO\n"


@pytest.mark.parametrize("argv, code, fragment", [
    (["run", "--rm", "--pull", "never", "nosuchimage:1"], 125, "nosuchimage"),  # never: no pull from docker.io
    (["run", "--rm", IMAGE, "/no/such/command"], 127, "no/such/command"),
    (["run", "--rm", IMAGE, "/etc/passwd"], 126, "passwd"),
    (["run", "--rm", "-m", "12zb", IMAGE, "true"], 125, "memory"),
    (["run", "--rm", "--restart", "sometimes", IMAGE, "true"], 125, "restart"),
    (["run", "--rm", "-v", "/nonexistent-flotilla-src:/x", IMAGE, "true"], 125, "nonexistent-flotilla-src"),
])
def test_bad_run_input_is_one_line_and_creates_nothing(ctl, agent, argv, code, fragment):
    res = ctl(*argv, check=False)
    assert res.returncode == code, res.stderr
    assert res.stderr.count("\n") == 1 and fragment in res.stderr, res.stderr
    wait_for(lambda: not agent.container_ids(), what="no container to remain")


def test_unknown_container_and_name_in_use(ctl, agent):
    res = ctl("stop", "nosuch", check=False)
    assert res.returncode == 1 and res.stderr.startswith("Error response from daemon:") and "nosuch" in res.stderr
    assert res.stderr.count("\n") == 1
    name = f"dup-{agent.suffix}"
    ctl("create", "--name", name, IMAGE, "true")
    res = ctl("create", "--name", name, IMAGE, "true", check=False)
    assert res.returncode != 0 and name in res.stderr and res.stderr.count("\n") == 1
    assert len(agent.container_ids()) == 1


def test_rm_of_running_container_needs_force(ctl, agent):
    cid = ctl("run", "-d", IMAGE, "sleep", "60").stdout.strip()
    res = ctl("rm", cid, check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert agent.status(cid) == "running"
    ctl("rm", "-f", cid)
    assert agent.container_ids() == []


def test_agent_unreachable_is_one_line(tmp_path):
    res = subprocess.run([str(BIN / "swarmctl"), "-H", f"unix://{tmp_path}/none.sock", "ps"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "Is the agent running?" in res.stderr and res.stderr.count("\n") == 1


def test_detach_keys_leave_the_container_running(ctl, agent):
    name = f"detach-{agent.suffix}"
    output, code = drive_pty(agent, ["run", "-it", "--name", name, IMAGE, "sh"], b"\x10\x11")
    assert code == 0
    assert agent.status(name) == "running"


def test_signals_to_an_attached_run_reach_the_container(ctl, agent):
    """Docker's --sig-proxy: SIGINT to `swarmctl run` (no tty) is delivered to the container."""
    import signal

    proc = subprocess.Popen([str(BIN / "swarmctl"), "run", "--rm", IMAGE, "sh", "-c",
                             'trap "echo got-int; exit 9" INT; echo ready; while true; do sleep 0.1; done'],
                            stdout=subprocess.PIPE, text=True, env=agent.env)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 9
        assert proc.stdout.read() == "got-int\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lambda: not agent.container_ids(), what="--rm to remove the container")


def test_network_modes(ctl):
    none = ctl("run", "--rm", "--network", "none", IMAGE, "ls", "/sys/class/net").stdout.split()
    assert none == ["lo"]
    host = ctl("run", "--rm", "--network", "host", IMAGE, "ls", "/sys/class/net").stdout.split()
    # the host's own links (others' tests may add or remove some meanwhile, so no equality)
    assert "lo" in host and set(host) & (set(os.listdir("/sys/class/net")) - {"lo"})


def test_cpu_flags_reach_the_container_config(ctl, agent):
    name = f"cpu-{agent.suffix}"
    ctl("create", "--name", name, "--cpus", "0.5", "-c", "512", "--restart", "on-failure:4", IMAGE, "true")
    host = agent.inspect(name)["HostConfig"]
    assert (host["NanoCpus"], host["CpuShares"]) == (500_000_000, 512)
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 4}
