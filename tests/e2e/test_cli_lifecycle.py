"""Every other local command end to end: lifecycle, logs, exec, top, stats, pause, files, images, volumes."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time

import pytest

from cli_harness import BIN, IMAGE, agent, ctl, wait_for  # noqa: F401  (fixtures)

pytestmark = pytest.mark.root


def test_create_start_stop_restart_kill_wait_rm(ctl, agent):
    name = f"life-{agent.suffix}"
    cid = ctl("create", "--name", name, "--stop-timeout", "1", IMAGE, "sleep", "60").stdout.strip()
    assert agent.status(name) == "created"
    assert "Created" in ctl("ps", "-a").stdout
    assert ctl("start", name).stdout == f"{name}\n"
    assert agent.status(cid) == "running"
    ps = ctl("ps").stdout.splitlines()
    assert ps[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert cid[:12] in ps[1] and '"sleep 60"' in ps[1] and "Up " in ps[1] and ps[1].endswith(name)
    before = agent.inspect(name)["State"]["Pid"]
    ctl("restart", "-t", "1", name)
    assert agent.status(name) == "running" and agent.inspect(name)["State"]["Pid"] != before
    ctl("stop", "-t", "1", name)
    state = agent.inspect(name)["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137  # sleep ignores TERM as pid 1
    ctl("start", name)
    ctl("kill", name)
    assert ctl("wait", name).stdout == "137\n"
    assert "Exited (137)" in ctl("ps", "-a").stdout
    ctl("rm", name)
    assert agent.container_ids() == []


def test_run_init_stops_at_the_stop_signal(ctl, agent):
    """`run --init`: the command is the init's child, so the stop signal ends a `sleep` at once (143)."""
    cid = ctl("run", "-d", "--init", "--stop-timeout", "30", IMAGE, "sleep", "1000").stdout.strip()
    assert agent.inspect(cid)["HostConfig"]["Init"] is True
    assert [line.split()[-1] for line in ctl("top", cid).stdout.splitlines()[1:]] == ["flotilla-init", "1000"]
    ctl("stop", cid)
    assert agent.inspect(cid)["State"]["ExitCode"] == 143


def test_wait_blocks_until_exit(ctl):
    cid = ctl("run", "-d", IMAGE, "sh", "-c", "sleep 0.5; exit 7").stdout.strip()
    assert ctl("wait", cid).stdout == "7\n"


def test_logs_tail_timestamps_follow(ctl, agent):
    cid = ctl("run", "-d", IMAGE, "sh", "-c", "for i in 1 2 3; do echo line$i; done; echo oops >&2").stdout.strip()
    ctl("wait", cid)
    res = ctl("logs", cid)
    assert res.stdout == "line1\nline2\nline3\n" and res.stderr == "oops\n"
    assert ctl("logs", "--tail", "1", cid).stderr == "oops\n"
    stamped = ctl("logs", "-t", cid).stdout.splitlines()
    assert stamped[0].endswith("Z line1") and stamped[0][:4].isdigit()
    cid2 = ctl("run", "-d", IMAGE, "sh", "-c", "echo first; sleep 1; echo second").stdout.strip()
    assert ctl("logs", "-f", cid2).stdout == "first\nsecond\n"


def test_exec_attach_top(ctl, agent):
    cid = ctl("run", "-d", IMAGE, "sleep", "60").stdout.strip()
    res = ctl("exec", "-e", "X=1", "-w", "/tmp", "-u", "1000", cid, "sh", "-c", 'echo "$X $(pwd) $(id -u)"; exit 4',
              check=False)
    assert (res.returncode, res.stdout) == (4, "1 /tmp 1000\n")
    assert ctl("exec", "-i", cid, "cat", input="piped\n").stdout == "piped\n"
    assert ctl("exec", cid, "/nope", check=False).returncode == 127
    ctl("exec", "-d", cid, "sh", "-c", "sleep 30")
    top = ctl("top", cid).stdout.splitlines()
    assert "PID" in top[0] and "CMD" in top[0]
    assert any("sleep 60" in line for line in top[1:]) and any("sleep 30" in line for line in top[1:])


def test_attach_receives_output(ctl, agent):
    """Attach sees output from then on (as Docker: earlier output is only in the log) and the exit code."""
    cid = ctl("run", "-d", IMAGE, "sh", "-c",
              "while [ ! -e /tmp/go ]; do echo tick; sleep 0.1; done; echo attached-out; exit 5").stdout.strip()
    attach = subprocess.Popen([str(BIN / "swarmctl"), "attach", cid], stdout=subprocess.PIPE, text=True,
                              env=agent.env)
    try:
        assert attach.stdout.readline() == "tick\n"  # attached
        ctl("exec", cid, "touch", "/tmp/go")
        rest = attach.stdout.read()
        assert attach.wait(30) == 5
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.wait()
    assert rest.endswith("attached-out\n") and set(rest.splitlines()[:-1]) <= {"tick"}


def test_start_attach(ctl):
    cid = ctl("create", IMAGE, "sh", "-c", "echo started; exit 2").stdout.strip()
    res = ctl("start", "-a", cid, check=False)
    assert (res.returncode, res.stdout) == (2, "started\n")


def test_pause_freezes_and_unpause_thaws(ctl, agent):
    cid = ctl("run", "-d", IMAGE, "sh", "-c", "while true; do echo tick; sleep 0.05; done").stdout.strip()
    wait_for(lambda: ctl("logs", cid).stdout.count("tick") > 2, what="ticks")
    ctl("pause", cid)
    assert agent.status(cid) == "paused"
    assert "(Paused)" in ctl("ps").stdout
    counts: list[int] = []

    def settled() -> bool:  # output already in the pipe may still reach the log once
        counts.append(ctl("logs", cid).stdout.count("tick"))
        return len(counts) >= 2 and counts[-1] == counts[-2]

    wait_for(settled, 15, interval=0.3, what="the log to stop growing")
    frozen = counts[-1]
    time.sleep(0.5)
    assert ctl("logs", cid).stdout.count("tick") == frozen
    ctl("unpause", cid)
    wait_for(lambda: ctl("logs", cid).stdout.count("tick") > frozen, what="ticks after unpause")


def test_stats_and_inspect(ctl, agent):
    name = f"st-{agent.suffix}"
    ctl("run", "-d", "--name", name, "-m", "64m", "--pids-limit", "50", "-l", "team=a", IMAGE, "sleep", "60")
    out = ctl("stats", "--no-stream", name).stdout.splitlines()
    assert out[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
    assert name in out[1] and "64MiB" in out[1]
    doc = agent.inspect(name)
    assert doc["Name"].lstrip("/") == name and doc["State"]["Running"] is True
    assert doc["HostConfig"]["Memory"] == 64 << 20
    assert doc["Config"]["Labels"] == {"team": "a"}
    res = ctl("inspect", name, "nosuch-object", check=False)
    assert res.returncode == 1 and "No such object: nosuch-object" in res.stderr
    assert len(json.loads(res.stdout)) == 1


def test_cp_both_ways_and_tar_streams(ctl, tmp_path):
    cid = ctl("run", "-d", IMAGE, "sleep", "60").stdout.strip()
    src = tmp_path / "hello.txt"
    src.write_text("from host\n")
    ctl("cp", str(src), f"{cid}:/tmp/")
    ctl("cp", str(src), f"{cid}:/tmp/renamed.txt")
    assert ctl("exec", cid, "cat", "/tmp/hello.txt", "/tmp/renamed.txt").stdout == "from host\nfrom host\n"
    ctl("exec", cid, "sh", "-c", "mkdir -p /d/sub && echo deep > /d/sub/f")
    ctl("cp", f"{cid}:/d", str(tmp_path / "copied"))
    assert (tmp_path / "copied" / "sub" / "f").read_text() == "deep\n"
    tar_bytes = ctl("cp", f"{cid}:/d/sub/f", "-", input=b"").stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        assert tar.getnames() == ["f"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("streamed.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    ctl("cp", "-", f"{cid}:/tmp", input=buf.getvalue())
    assert ctl("exec", cid, "cat", "/tmp/streamed.txt").stdout == "abc"
    assert ctl("cp", f"{cid}:/nope", str(tmp_path / "x"), check=False).returncode == 1


def test_export_commit_images_tag_rmi(ctl, agent, tmp_path):
    cid = ctl("run", "-d", IMAGE, "sh", "-c", "echo committed > /marker; sleep 60").stdout.strip()
    wait_for(lambda: ctl("exec", cid, "cat", "/marker", check=False).stdout == "committed\n", what="the marker")
    out = tmp_path / "rootfs.tar"
    ctl("export", "-o", str(out), cid)
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    assert {"marker", "bin/busybox"} <= {n.lstrip("./") for n in names}
    ref = f"committed-{agent.suffix}:v1"
    image_id = ctl("commit", "-c", 'CMD ["cat", "/marker"]', cid, ref).stdout.strip()
    assert image_id.startswith("sha256:")
    assert ctl("run", "--rm", ref).stdout == "committed\n"
    ctl("tag", ref, f"again-{agent.suffix}:v2")
    images = ctl("images").stdout.splitlines()
    assert images[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert any(line.startswith(f"again-{agent.suffix} ") and "v2" in line for line in images)
    ctl("rm", "-f", cid)
    removed = ctl("rmi", f"again-{agent.suffix}:v2").stdout
    assert "Untagged" in removed
    assert "Deleted" in ctl("rmi", ref).stdout
    assert ctl("rmi", ref, check=False).returncode == 1


def test_import_from_stdin_with_changes(ctl, agent, busybox_tar):
    ref = f"imported-{agent.suffix}:1"
    ctl("image", "import", "-c", "ENV GREETING=hey", "-c", 'CMD ["sh", "-c", "echo $GREETING"]', "-", ref,
        input=busybox_tar.read_bytes())
    assert ctl("run", "--rm", ref).stdout == "hey\n"
    ctl("rmi", ref)


def test_volumes(ctl, agent):
    vol = f"vol-{agent.suffix}"
    assert ctl("volume", "create", "--label", "k=v", vol).stdout == f"{vol}\n"
    assert vol in ctl("volume", "ls").stdout
    doc = json.loads(ctl("volume", "inspect", vol).stdout)[0]
    assert doc["Name"] == vol and doc["Labels"] == {"k": "v"} and doc["Driver"] == "local"
    ctl("run", "--rm", "-v", f"{vol}:/data", IMAGE, "sh", "-c", "echo kept > /data/f")
    assert ctl("run", "--rm", "-v", f"{vol}:/data", IMAGE, "cat", "/data/f").stdout == "kept\n"
    cid = ctl("run", "-d", "-v", f"{vol}:/data", IMAGE, "sleep", "60").stdout.strip()
    assert ctl("volume", "rm", vol, check=False).returncode == 1  # in use
    ctl("rm", "-f", cid)
    ctl("volume", "rm", vol)
    assert vol not in ctl("volume", "ls").stdout


def test_kill_with_a_signal_and_start_attached_with_stdin(ctl, agent):
    cid = ctl("run", "-d", IMAGE, "sh", "-c",
              'trap "echo got-usr1" USR1; echo ready; while true; do sleep 0.1; done').stdout.strip()
    wait_for(lambda: ctl("logs", cid).stdout == "ready\n", what="the trap to be set")
    ctl("kill", "-s", "USR1", cid)
    wait_for(lambda: "got-usr1" in ctl("logs", cid).stdout, what="the signal to arrive")
    assert agent.status(cid) == "running"
    interactive = ctl("create", "-i", IMAGE, "sh", "-c", "read line; echo got:$line").stdout.strip()
    res = ctl("start", "-a", "-i", interactive, input="typed\n")
    assert res.stdout == "got:typed\n"


def test_stats_stream_refreshes(agent, ctl):
    cid = ctl("run", "-d", IMAGE, "sleep", "60").stdout.strip()
    proc = subprocess.Popen([str(BIN / "swarmctl"), "stats", cid], stdout=subprocess.PIPE, env=agent.env)
    try:
        frames = b""
        while frames.count(cid[:12].encode()) < 2:  # two refreshes, each with the container's row
            chunk = proc.stdout.read1(4096)
            assert chunk, f"stats ended early: {frames!r}"
            frames += chunk
    finally:
        proc.kill()
        proc.wait()
    assert frames.count(b"\033[2J") >= 2
