"""`--init` on the real kernel: the shim's in-process init is pid 1, forwards signals, reaps zombies
and passes the command's end through (the `rt` fixture checks nothing of the test is left)."""
from __future__ import annotations

import pytest

from flotilla.runtime.errors import StartFailed
from flotilla.runtime.spec import ContainerSpec, ExecSpec
from tests.integration.test_runtime_containers import rt, run, wait_for  # noqa: F401 (rt is a fixture)

pytestmark = pytest.mark.root


def test_pid_1_is_the_init_and_the_command_its_child(rt):  # noqa: F811
    out, code = run(rt, "sh", "-c", "echo pid=$$ ppid=$PPID; tr '\\0' ' ' < /proc/1/cmdline; echo; "
                    "cat /proc/1/comm; echo $(ls /proc/1/fd)", init=True)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] != "pid=1 ppid=0" and lines[0].endswith("ppid=1"), out
    assert lines[1].split() == ["flotilla-init"], out  # no host path of the shim's command line
    assert lines[2] == "flotilla-init", out
    assert sorted(lines[3].split()) == ["0", "1", "2"], out  # no fd of the host beyond stdio
    c = rt.list(all=True)[0]
    assert rt.inspect(c.id)["HostConfig"]["Init"] is True
    out, code = run(rt, "sh", "-c", "echo pid=$$")
    assert out.strip() == "pid=1"  # without --init the command is pid 1 itself
    assert rt.inspect(rt.list(all=True)[0].id)["HostConfig"]["Init"] is False


def test_stop_ends_sleep_by_sigterm_through_the_init(rt):  # noqa: F811
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"], init=True, stop_timeout=600))
    rt.start(c.id)
    rows = rt.top(c.id)
    assert any("flotilla-init" in r["CMD"] for r in rows) and any("sleep 1000" in r["CMD"] for r in rows), rows
    # An exec joins the container under the init: its parent is not the command.
    exec_id, sock = rt.exec(c.id, ExecSpec(cmd=["sh", "-c", "cat /proc/1/comm"]))
    sock.close()
    rt.stop(c.id)  # a 600 s grace: only the forwarded SIGTERM can end it before the test's timeout
    assert rt.get(c.id).exit_code == 143  # 128+SIGTERM, as tini reports it; SIGKILL would be 137


@pytest.mark.parametrize(("cmd", "code"), [("exit 0", 0), ("exit 3", 3), ("kill -KILL $$", 137),
                                           ("kill -USR1 $$", 138)])
def test_exit_codes_pass_through(rt, cmd, code):  # noqa: F811
    out, got = run(rt, "sh", "-c", cmd, init=True)
    assert got == code, out


def test_kill_reaches_the_command_and_sigkill_ends_the_container(rt):  # noqa: F811
    c = rt.create(ContainerSpec(image="busybox", cmd=["sh", "-c", "trap 'exit 7' USR1; echo ready; "
                                                      "while true; do sleep 0.1; done"], init=True))
    rt.start(c.id)
    wait_for(lambda: any(e.data == b"ready\n" for e in rt.logs(c.id)))
    rt.kill(c.id, "SIGUSR1")
    assert rt.wait(c.id, timeout=30) == 7
    c2 = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"], init=True))
    rt.start(c2.id)
    rt.kill(c2.id, "SIGKILL")
    assert rt.wait(c2.id, timeout=30) == 137


def test_orphaned_zombies_are_reaped(rt):  # noqa: F811
    # The shell's child forks `sleep` and exits: the orphan is re-parented to the init (pid 1),
    # which never started it and must still reap it once it ends, or it stays a zombie ("Z").
    script = ("sh -c 'sleep 0.2 & echo $! > /tmp/orphan'; p=$(cat /tmp/orphan); i=0; "
              "while [ -e /proc/$p ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; "
              "if [ -e /proc/$p ]; then grep State /proc/$p/status; else echo reaped; fi")
    out, code = run(rt, "sh", "-c", script, init=True)
    assert code == 0 and out.strip() == "reaped", out


def test_a_failing_exec_still_reports_127(rt):  # noqa: F811
    c = rt.create(ContainerSpec(image="busybox", cmd=["nosuchcommand"], init=True))
    with pytest.raises(StartFailed, match="executable file not found") as info:
        rt.start(c.id)
    assert info.value.exit_code == 127
    assert rt.get(c.id).exit_code == 127


def test_with_a_tty_the_command_is_the_foreground_process_group(rt):  # noqa: F811
    # /proc/self/stat of the command: pid, pgrp (5th field) and the tty's foreground group (8th).
    out, code = run(rt, "sh", "-c", "cut -d' ' -f1,5,8 /proc/$$/stat", tty=True, init=True)
    assert code == 0, out
    pid, pgrp, tpgid = out.split()
    assert pid == pgrp == tpgid and pid != "1", out
