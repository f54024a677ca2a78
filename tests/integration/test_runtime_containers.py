"""Containers through the Runtime API on the real kernel: namespaces, overlay, cgroups, shim.

Every test gets its own state root and cgroup parent (`flotilla-test-<unique>`); the fixture
removes everything and then checks that no cgroup, mount or process of the test remains.
"""
from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import threading
import time
from pathlib import Path

import pytest

from flotilla.runtime import shim
from flotilla.runtime.clock import parse_rfc3339
from flotilla.runtime.errors import Conflict, InvalidArgument, NotFound, StartFailed
from flotilla.runtime.runtime import Runtime
from flotilla.runtime.spec import ContainerSpec, ExecSpec, Mount, RestartPolicy
from tests.conftest import mounts_containing

pytestmark = pytest.mark.root


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def subnet_for(unique: str) -> str:
    """The test's own default bridge subnet, so concurrent runs never share one."""
    n = int(unique, 16)
    return f"10.{160 + n % 96}.{n // 96 % 256}.0/24"


@pytest.fixture
def rt(tmp_path, unique, busybox_tar):
    root = tmp_path / "root"
    runtime = Runtime(root, cgroup_parent=f"flotilla-test-{unique}", default_subnet=subnet_for(unique))
    runtime.import_image(busybox_tar, "busybox", {"Cmd": ["sh"]})
    yield runtime
    for c in runtime.list(all=True):
        runtime.remove(c.id, force=True, volumes=True)
    runtime.close_cgroup_parent()
    runtime.drain()
    runtime.close()
    assert list(Path("/sys/fs/cgroup").glob(f"*/flotilla-test-{unique}")) == []
    assert mounts_containing(str(root)) == []
    assert processes_mentioning(str(root)) == []
    assert os.listdir(root / "containers") == [] and os.listdir(root / "tmpmounts") == []


def run(rt: Runtime, *cmd: str, **kw) -> tuple[str, int]:
    """Create, start, wait; returns (stdout+stderr from the log, exit code)."""
    c = rt.create(ContainerSpec(image=kw.pop("image", "busybox"), cmd=list(cmd) or None, **kw))
    rt.start(c.id)
    code = rt.wait(c.id, timeout=60)
    return b"".join(e.data for e in rt.logs(c.id)).decode(), code


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def tar_of(files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def untar(chunks) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()}


def test_lifecycle_exit_code_logs_inspect_remove(rt, unique):
    c = rt.create(ContainerSpec(image="busybox", name=f"life-{unique}", cmd=["sh", "-c", "echo out; echo err >&2; exit 3"],
                                labels={"k": "v"}))
    assert len(c.id) == 64 and c.status == "created" and c.command == "sh -c 'echo out; echo err >&2; exit 3'"
    assert rt.get(f"life-{unique}").id == c.id and rt.get(c.id[:10]).id == c.id
    assert rt.start(c.id) is None
    assert rt.wait(f"life-{unique}", timeout=30) == 3
    info = rt.get(c.id)
    assert info.status == "exited" and info.exit_code == 3 and info.pid == 0 and info.finished_at >= info.started_at > 0
    assert [(e.stream, e.data) for e in rt.logs(c.id)] == [("stdout", b"out\n"), ("stderr", b"err\n")]
    assert all(parse_rfc3339(e.time) > 0 for e in rt.logs(c.id))
    data = rt.inspect(c.id)
    assert data["Name"] == f"/life-{unique}" and data["State"]["Status"] == "exited" and data["State"]["ExitCode"] == 3
    assert data["Config"]["Cmd"] == ["sh", "-c", "echo out; echo err >&2; exit 3"] and data["Config"]["Labels"] == {"k": "v"}
    assert data["Config"]["Hostname"] == c.id[:12] and not data["State"]["OOMKilled"]
    assert [i.id for i in rt.list()] == [] and [i.id for i in rt.list(all=True)] == [c.id]
    rt.remove(c.id)
    with pytest.raises(NotFound, match="no such container"):
        rt.get(c.id)


def test_network_none_namespace_is_the_shims_own(rt, unique):
    """On network none the shim makes the namespace at clone time: no bind mount or record on the
    host while it runs, and `network inspect none` still lists the container."""
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"], network_mode="none", name=f"iso-{unique}"))
    rt.start(c.id)
    try:
        pid = rt.get(c.id).pid
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert c.id not in Path("/proc/self/mountinfo").read_text()
        assert c.id not in rt.net.nm.containers()
        assert list(rt.network_inspect("none")["Containers"]) == [c.id]
        assert rt.inspect(c.id)["NetworkSettings"]["Networks"]["none"]["IPAddress"] == ""
    finally:
        rt.remove(c.id, force=True)
    assert rt.network_inspect("none")["Containers"] == {}


def test_generated_name_and_isolation(rt, unique):
    out, code = run(rt, "sh", "-c", "hostname; cat /proc/net/dev | grep -c :; ps | wc -l; id -u; "
                    "cat /sys/class/net/lo/flags; ping -c 1 -W 2 127.0.0.1 >/dev/null && echo reached",
                    network_mode="none")
    hostname, netdevs, nprocs, uid, lo_flags, ping = out.split()
    assert code == 0 and len(hostname) == 12 and netdevs == "1" and uid == "0"  # only lo in a new net ns
    assert int(lo_flags, 16) & 1 and ping == "reached"  # lo is up (IFF_UP): the shim brought it up
    assert int(nprocs) <= 4  # header, sh, ps, wc: no host process is visible
    name = rt.list(all=True)[0].name
    assert "_" in name
    out, code = run(rt, "sh", "-c", "hostname; cat /etc/hostname; grep -c localhost /etc/hosts; grep -c '^nameserver 127' /etc/resolv.conf",
                    network_mode="none")
    uts_name, name_file, localhost_lines, loopback_servers = out.split()
    # none: the network's resolv.conf is the host's without loopback servers (unreachable from a netns)
    assert name_file == uts_name and int(localhost_lines) >= 2 and loopback_servers == "0"
    out, code = run(rt, "sh", "-c", "hostname; cat /etc/resolv.conf", network_mode="host")
    assert out == socket.gethostname() + "\n" + Path("/etc/resolv.conf").read_text()
    out, code = run(rt, "cat", "/etc/hosts", mounts=[Mount(str(Path(__file__)), "/etc/hosts", readonly=True)])
    assert out == Path(__file__).read_text()  # the user's mount wins over the generated file


def test_start_with_attach_loses_no_output(rt):
    c = rt.create(ContainerSpec(image="busybox", cmd=["echo", "first line"]))
    sock = rt.start(c.id, attach=True)
    with sock:
        out, err, code = shim.collect(sock)
    assert (out, err, code) == (b"first line\n", b"", 0)


def test_attach_with_stdin(rt):
    c = rt.create(ContainerSpec(image="busybox", cmd=["cat"], stdin_open=True))
    sock = rt.start(c.id, attach=True)
    with sock:
        sock.sendall(shim.encode_frame(shim.STDIN, b"echo me\n") + shim.encode_frame(shim.STDIN_CLOSE))
        assert shim.collect(sock) == (b"echo me\n", b"", 0)


def test_missing_command_fails_like_docker(rt, unique):
    c = rt.create(ContainerSpec(image="busybox", cmd=["nosuch"]))
    with pytest.raises(StartFailed) as e:
        rt.start(c.id)
    assert e.value.exit_code == 127 and "executable file not found" in str(e.value)
    data = rt.inspect(c.id)
    assert data["State"]["Status"] == "created" and data["State"]["ExitCode"] == 127 and "nosuch" in data["State"]["Error"]
    assert list(Path("/sys/fs/cgroup").glob(f"*/flotilla-test-{unique}/{c.id}")) == []


def test_stop_kill_restart(rt):
    graceful = rt.create(ContainerSpec(image="busybox", cmd=[
        "sh", "-c", "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done"]))
    rt.start(graceful.id)
    wait_for(lambda: any(e.data == b"ready\n" for e in rt.logs(graceful.id)))  # the trap is set
    rt.stop(graceful.id, timeout=30)
    assert rt.get(graceful.id).status == "exited" and rt.get(graceful.id).exit_code == 0

    stubborn = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"], stop_timeout=1))
    rt.start(stubborn.id)
    rt.stop(stubborn.id)  # sleep as pid 1 ignores SIGTERM: SIGKILL after the grace time
    assert rt.get(stubborn.id).exit_code == 137
    rt.restart(stubborn.id, timeout=0)
    assert rt.get(stubborn.id).status == "running"
    rt.record_restart(stubborn.id)
    with pytest.raises(Conflict, match="container is running"):
        rt.remove(stubborn.id)
    rt.kill(stubborn.id, "SIGKILL")
    assert rt.wait(stubborn.id, timeout=30) == 137
    assert rt.inspect(stubborn.id)["RestartCount"] == 1
    with pytest.raises(Conflict, match="not running"):
        rt.kill(stubborn.id)
    with pytest.raises(InvalidArgument, match="invalid signal"):
        rt.kill(stubborn.id, "NOPE")


def test_memory_limit_is_enforced_by_the_oom_killer(rt):
    out, code = run(rt, "sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done", memory=16 << 20)
    c = rt.list(all=True)[0]
    assert code == 137
    data = rt.inspect(c.id)
    assert data["State"]["OOMKilled"] is True and data["HostConfig"]["Memory"] == 16 << 20


def test_host_devices_are_unusable_despite_mknod(rt):
    """CAP_MKNOD is kept (as Docker), so only the devices cgroup stops the use of host devices.

    /dev/net/tun (c 10:200) is a host device outside the allowlist that needs no capability to open:
    without the cgroup rule the open reaches the driver (a read then fails with EIO), with it EPERM.
    """
    out, code = run(rt, "sh", "-c", "mknod /tmp/k c 10 200 && head -c 1 /tmp/k; head -c 4 /dev/zero | wc -c")
    assert code == 0, out
    assert "/tmp/k: Operation not permitted" in out, out
    assert "4" in out.split(), out  # the allowed devices still work


def test_host_devices_are_unusable_on_cgroup_v2(tmp_path, unique, busybox_tar):
    """The same on cgroup v2, where an eBPF device program replaces the devices controller.

    The runtime drives this hybrid host's real cgroup2 mount (`unified`) as a pure v2 host's
    root, so the container's only device restriction is the program the runtime attached.
    """
    root = tmp_path / "root"
    unified = Path("/sys/fs/cgroup/unified")
    runtime = Runtime(root, cgroup_parent=f"flotilla-test-{unique}", cgroup_root=unified,
                      default_subnet=subnet_for(unique))
    try:
        assert runtime.cgroups.v2 and runtime.cgroups.device_filter_supported
        runtime.import_image(busybox_tar, "busybox", {"Cmd": ["sh"]})
        out, code = run(runtime, "sh", "-c", "mknod /tmp/k c 10 200 && head -c 1 /tmp/k; head -c 4 /dev/zero | wc -c",
                        network_mode="none")
        assert code == 0, out
        assert "/tmp/k: Operation not permitted" in out, out
        assert "4" in out.split(), out
    finally:
        for c in runtime.list(all=True):
            runtime.remove(c.id, force=True, volumes=True)
        runtime.close_cgroup_parent()
        runtime.drain()
        runtime.close()
    assert not (unified / f"flotilla-test-{unique}").exists()
    assert mounts_containing(str(root)) == [] and processes_mentioning(str(root)) == []


def test_pids_limit_stops_a_fork_bomb(rt):
    # the subshell forks until the kernel refuses; the main shell then only uses builtins (echo, read)
    c = rt.create(ContainerSpec(image="busybox", pids_limit=10, stdin_open=True, cmd=[
        "sh", "-c", "(while true; do sleep 100 & done); echo spawned; read x"]))
    rt.start(c.id)
    wait_for(lambda: any(b"spawned" in e.data for e in rt.logs(c.id)))
    stats = rt.stats(c.id)
    assert stats["pids_limit"] == 10 and 2 <= stats["pids_current"] <= 10  # the subshell itself has exited
    assert len(rt.top(c.id)) == stats["pids_current"]
    assert any(b"fork" in e.data for e in rt.logs(c.id) if e.stream == "stderr")
    rt.remove(c.id, force=True)


def test_pause_freezes_the_container(rt):
    c = rt.create(ContainerSpec(image="busybox", cmd=["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; done"]))
    rt.start(c.id)
    counter = Path(f"/proc/{rt.get(c.id).pid}/root/tmp/n")
    wait_for(lambda: counter.exists() and counter.read_text().strip() != "")
    rt.pause(c.id)
    assert rt.get(c.id).status == "paused" and rt.inspect(c.id)["State"]["Paused"]
    frozen = counter.read_text()
    time.sleep(0.3)
    assert counter.read_text() == frozen
    with pytest.raises(Conflict, match="paused"):
        rt.exec(c.id, ExecSpec(cmd=["true"]))
    rt.unpause(c.id)
    wait_for(lambda: counter.read_text() not in ("", frozen))
    with pytest.raises(Conflict, match="not paused"):
        rt.unpause(c.id)
    rt.pause(c.id)
    rt.stop(c.id, timeout=0)  # a paused container can be stopped
    assert rt.get(c.id).status == "exited"


def test_logs_follow_tail_and_since(rt):
    c = rt.create(ContainerSpec(image="busybox", cmd=["sh", "-c", "echo a; sleep 0.5; echo b; sleep 0.5; echo c"]))
    rt.start(c.id)
    followed = [e.data for e in rt.logs(c.id, follow=True)]
    assert followed == [b"a\n", b"b\n", b"c\n"] and rt.get(c.id).status == "exited"
    assert [e.data for e in rt.logs(c.id, tail=1)] == [b"c\n"]
    second = list(rt.logs(c.id))[1]
    assert [e.data for e in rt.logs(c.id, since=parse_rfc3339(second.time))] == [b"b\n", b"c\n"]


def test_exec(rt):
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"], env=["FROM_CTR=1"]))
    rt.start(c.id)
    exec_id, sock = rt.exec(c.id, ExecSpec(cmd=["sh", "-c", "echo $FOO $FROM_CTR; id -u; pwd; exit 4"], env=["FOO=bar"],
                                            user="app", workdir="/home/app"))
    with sock:
        out, err, code = shim.collect(sock)
    assert len(exec_id) == 64 and (out, code) == (b"bar 1\n1000\n/home/app\n", 4)
    with pytest.raises(StartFailed) as e:
        rt.exec(c.id, ExecSpec(cmd=["nosuch"]))
    assert e.value.exit_code == 127
    assert [r["CMD"] for r in rt.top(c.id)] == ["sleep 1000"]
    _, sock = rt.exec(c.id, ExecSpec(cmd=["true"]))
    sock.close()
    exec_files = os.listdir(rt.root / "containers" / c.id / "exec")
    assert len([f for f in exec_files if f.endswith(".conf")]) <= 2  # finished execs are pruned
    rt.stop(c.id, timeout=0)
    with pytest.raises(Conflict, match="not running"):
        rt.exec(c.id, ExecSpec(cmd=["true"]))


def test_copy_to_and_from_running_and_stopped(rt, unique):
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"]))
    rt.start(c.id)
    rt.copy_to(c.id, "/tmp", tar_of({"in.txt": b"from the host"}))
    _, sock = rt.exec(c.id, ExecSpec(cmd=["sh", "-c", "cat /tmp/in.txt; ln -s / /tmp/esc; mkdir /tmp/d; echo x > /tmp/d/f"]))
    with sock:
        assert shim.collect(sock)[0] == b"from the host"
    assert untar(rt.copy_from(c.id, "/tmp/d")) == {"d": None, "d/f": b"x\n"}
    # a symlink inside the container resolves inside it: this is the container's passwd, not the host's
    assert b"app:x:1000" in untar(rt.copy_from(c.id, "/tmp/esc/etc/passwd"))["passwd"]
    with pytest.raises(NotFound, match="could not find"):
        list(rt.copy_from(c.id, "/nope"))
    with pytest.raises(InvalidArgument):
        list(rt.copy_from(c.id, "/../../etc/passwd"))
    # writing through the container's symlink lands in the container, never on the host
    rt.copy_to(c.id, "/tmp/esc/root", tar_of({f"pwned-{unique}": b"inside"}))
    assert not Path(f"/root/pwned-{unique}").exists()
    assert untar(rt.copy_from(c.id, f"/root/pwned-{unique}")) == {f"pwned-{unique}": b"inside"}
    with pytest.raises(InvalidArgument, match="would leave"):
        rt.copy_to(c.id, "/tmp", tar_of({f"../../../../tmp/escape-{unique}": b"x"}))
    assert not Path(f"/tmp/escape-{unique}").exists()
    rt.stop(c.id, timeout=0)
    # stopped: through a temporary overlay mount, unmounted afterwards (the fixture checks)
    rt.copy_to(c.id, "/root", tar_of({"later.txt": b"while stopped"}))
    assert untar(rt.copy_from(c.id, "/root/later.txt")) == {"later.txt": b"while stopped"}
    assert untar(rt.copy_from(c.id, "/tmp/in.txt")) == {"in.txt": b"from the host"}
    with pytest.raises(NotFound):
        rt.copy_to(c.id, "/missing/dir", tar_of({"x": b""}))


def test_export_commit_and_run_the_new_image(rt, unique):
    c = rt.create(ContainerSpec(image="busybox", cmd=[
        "sh", "-c", "echo made > /newfile; rm /etc/group; mkdir -p /opt/x; rm -rf /home; mkdir /home; touch /home/only"]))
    rt.start(c.id)
    assert rt.wait(c.id, timeout=30) == 0
    exported = untar(rt.export(c.id))
    assert exported["newfile"] == b"made\n" and "etc/group" not in exported and "bin/busybox" in exported
    assert "home/only" in exported and "home/app" not in exported
    image = rt.commit(c.id, f"snap-{unique}:v1", {"Cmd": ["cat", "/newfile"], "Env": ["ADDED=1"]})
    assert image.repo_tags == [f"snap-{unique}:v1"] and len(image.layers) == 2
    assert image.config["Cmd"] == ["cat", "/newfile"] and "ADDED=1" in image.config["Env"]
    out, code = run(rt, image=f"snap-{unique}:v1")
    assert (out, code) == ("made\n", 0)
    out, code = run(rt, "sh", "-c", "test -e /etc/group || echo deleted; test -d /opt/x && echo dir; ls /home",
                    image=image.id)
    assert out == "deleted\ndir\nonly\n"  # whiteout and opaque directory survived the round trip
    with pytest.raises(Conflict, match="is using its referenced image"):
        rt.remove_image(f"snap-{unique}:v1")
    for ctr in rt.list(all=True):
        rt.remove(ctr.id)
    assert rt.remove_image(f"snap-{unique}:v1")[-1] == f"Deleted: {image.id}"


def test_running_export_skips_container_mounts(rt):
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"], mounts=[Mount("", "/vol")]))
    rt.start(c.id)
    exported = untar(rt.export(c.id))
    assert "bin/busybox" in exported and "proc" in exported and not any(n.startswith(("proc/", "dev/", "sys/")) for n in exported)
    rt.remove(c.id, force=True, volumes=True)
    assert rt.volumes() == []


def test_volumes_persist_and_are_protected(rt, unique, tmp_path):
    vol = f"data-{unique}"
    out, code = run(rt, "sh", "-c", "echo kept > /data/f", mounts=[Mount(vol, "/data")])
    assert code == 0 and rt.volume(vol).name == vol
    bind = tmp_path / "bind"
    bind.mkdir()
    (bind / "host.txt").write_text("from host")
    out, code = run(rt, "sh", "-c", "cat /data/f /b/host.txt; touch /b/new 2>&1 || echo ro",
                    mounts=[Mount(vol, "/data", readonly=True), Mount(str(bind), "/b", readonly=True)])
    assert out.startswith("kept\nfrom host") and "ro" in out and not (bind / "new").exists()
    with pytest.raises(Conflict, match="volume is in use"):
        rt.remove_volume(vol)
    # docker cp sees (and writes) the volume of a stopped container too, read-only binds stay read-only
    second, first = (c.id for c in rt.list(all=True))  # newest first
    assert untar(rt.copy_from(second, "/data/f")) == {"f": b"kept\n"}
    rt.copy_to(first, "/data", tar_of({"g": b"via cp"}))
    assert (Path(rt.volume(vol).mountpoint) / "g").read_bytes() == b"via cp"
    for ro in ("/data", "/b"):
        with pytest.raises(Conflict, match="read-only"):
            rt.copy_to(second, ro, tar_of({"h": b"no"}))
    assert not (bind / "h").exists() and not (Path(rt.volume(vol).mountpoint) / "h").exists()
    anon = rt.create(ContainerSpec(image="busybox", cmd=["true"], mounts=[Mount("", "/anon")]))
    anon_name = rt.inspect(anon.id)["Mounts"][0]["Name"]
    assert len(anon_name) == 64 and rt.volume(anon_name)
    rt.remove(anon.id, volumes=True)
    with pytest.raises(NotFound):
        rt.volume(anon_name)
    for c in rt.list(all=True):
        rt.remove(c.id, volumes=True)
    assert rt.volume(vol)  # named volumes survive `rm -v`
    rt.remove_volume(vol)
    assert rt.volumes() == []


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) + (f":{p.stat().st_size}" if p.is_file() else "") for p in root.rglob("*"))


def test_bad_input_leaves_the_store_exactly_as_before(rt, unique, tmp_path):
    rt.create(ContainerSpec(image="busybox", name=f"taken-{unique}", cmd=["true"]))
    root = rt.root
    before = snapshot(root)
    bad = [
        (ContainerSpec(image="nosuchimage"), NotFound, "no such image"),
        (ContainerSpec(image="busybox", name=f"taken-{unique}"), Conflict, "already in use"),
        (ContainerSpec(image="busybox", name="bad name"), InvalidArgument, "invalid container name"),
        (ContainerSpec(image="busybox", memory=100), InvalidArgument, "minimum memory"),
        (ContainerSpec(image="busybox", restart_policy=RestartPolicy("sometimes")), InvalidArgument, "restart policy"),
        (ContainerSpec(image="busybox", entrypoint=[]), InvalidArgument, "no command specified"),
        (ContainerSpec(image="busybox", mounts=[Mount(f"newvol-{unique}", "/v"), Mount("/x-nonexistent", "/x")]),
         InvalidArgument, "invalid mount config: bind source path does not exist: /x-nonexistent"),
    ]
    for spec, kind, message in bad:
        with pytest.raises(kind, match=message):
            rt.create(spec)
        assert snapshot(root) == before, spec
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        rt.import_image(io.BytesIO(b""), "UPPER")
    with pytest.raises(InvalidArgument, match="invalid tar archive"):
        rt.import_image(io.BytesIO(b"garbage" * 100), "garbage")
    assert snapshot(root) == before


def test_recover_adopts_running_containers_and_cleans_temp_mounts(rt, unique):
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"]))
    rt.start(c.id)
    done = rt.create(ContainerSpec(image="busybox", cmd=["true"]))
    rt.start(done.id)
    assert rt.wait(done.id, timeout=30) == 0
    stale = rt.root / "tmpmounts" / "stale"
    stale.mkdir()
    from flotilla.runtime.native import syscalls
    syscalls.mount("tmpfs", stale, "tmpfs")
    # a new Runtime on the same root, as after an agent crash: state comes from the files
    again = Runtime(rt.root, cgroup_parent=f"flotilla-test-{unique}", default_subnet=subnet_for(unique))
    assert again.recover() == [c.id]
    assert not stale.exists() and mounts_containing(str(stale)) == []
    assert again.get(c.id).status == "running" and again.get(done.id).status == "exited"
    fd = again.shim_pidfd(c.id)
    try:
        again.stop(c.id, timeout=0)
        assert again.get(c.id).exit_code == 137
        import select
        assert select.select([fd], [], [], 5)[0] == [fd]  # the pidfd reported the exit
    finally:
        os.close(fd)


def test_a_start_the_record_missed_is_adopted(rt, unique):
    """Crash between the shim's start and saving its pids: the shim's pid files are enough."""
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"]))
    journal = rt.root / "containers" / c.id / "state.log"
    assert not journal.exists()  # only the create's config.json so far
    rt.start(c.id)
    journal.unlink()  # as if the start was never saved
    again = Runtime(rt.root, cgroup_parent=f"flotilla-test-{unique}", default_subnet=subnet_for(unique))
    assert again.recover() == [c.id] and again.get(c.id).status == "running"
    assert again.get(c.id).pid == int((rt.root / "containers" / c.id / "init.pid").read_text())
    again.stop(c.id, timeout=0)
    assert again.get(c.id).exit_code == 137
    # the same on a second start: the record still names the first (dead) shim
    again.start(c.id)
    stale = json.loads(journal.read_bytes().splitlines()[-1])
    stale["state"]["shim_pid"], stale["state"]["finalized"] = 999_999_999, True  # above any pid_max: an old shim
    with open(journal, "a") as f:
        f.write(json.dumps(stale) + "\n")
    third = Runtime(rt.root, cgroup_parent=f"flotilla-test-{unique}", default_subnet=subnet_for(unique))
    assert third.recover() == [c.id]
    third.stop(c.id, timeout=0)
    assert third.get(c.id).status == "exited"


def test_cpu_limits_readonly_rootfs_and_tty(rt, unique):
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"], cpus=0.5, cpu_shares=512))
    rt.start(c.id)
    cpu = Path("/sys/fs/cgroup/cpu") / f"flotilla-test-{unique}" / c.id
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (cpu / "cpu.shares").read_text().strip() == "512"
    assert [int(p) for p in (cpu / "cgroup.procs").read_text().split()] == [rt.get(c.id).pid]
    assert rt.inspect(c.id)["HostConfig"]["NanoCpus"] == 500_000_000
    rt.remove(c.id, force=True)
    assert not cpu.exists()
    out, code = run(rt, "sh", "-c", "touch /x 2>/dev/null || echo read-only; touch /tmp/y 2>/dev/null || echo tmp-ro",
                    readonly_rootfs=True)
    assert out == "read-only\ntmp-ro\n"
    out, code = run(rt, "sh", "-c", "test -t 1 && echo tty; echo $TERM", tty=True)
    assert out.replace("\r", "") == "tty\nxterm\n"


def test_concurrent_creates_with_one_name(rt, unique):
    import threading

    results: list[object] = []

    def attempt() -> None:
        try:
            results.append(rt.create(ContainerSpec(image="busybox", name=f"race-{unique}", cmd=["true"])).id)
        except Conflict as e:
            results.append(e)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, str) for r in results) == 1 and len(rt.list(all=True)) == 1


def _states(rt: Runtime, cid: str) -> dict[int, tuple[str, str]]:
    """pid -> (state letter, comm) of every process in the container's cgroup."""
    out = {}
    for path in rt._cgroup(cid).paths()[:1]:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except FileNotFoundError:
                continue
            out[int(pid)] = (stat.rsplit(")", 1)[1].split()[0], stat[stat.index("(") + 1:stat.rindex(")")])
    return out


def test_init_forwards_the_stop_signal_reaps_and_passes_exit_codes_through(rt, unique):
    """--init: an init is pid 1 and the command its child, so a `sleep` (which as pid 1 ignores
    SIGTERM) dies of the stop signal at once: exit 143, not the grace period's 137."""
    c = rt.create(ContainerSpec(image="busybox", cmd=["sh", "-c", "(sleep 0.2 &); exec sleep 1000"], init=True,
                                network_mode="none", stop_timeout=30))
    rt.start(c.id)
    try:
        wait_for(lambda: "sleep 1000" in [r["CMD"] for r in rt.top(c.id)])  # the shell has exec'd
        rows = {r["CMD"]: r for r in rt.top(c.id)}
        assert "flotilla-init" in rows and rows["sleep 1000"]["PPID"] == rows["flotilla-init"]["PID"]
        assert rt.get(c.id).pid == rows["flotilla-init"]["PID"]
        assert rt.inspect(c.id)["HostConfig"]["Init"] is True
        time.sleep(0.6)  # the orphaned `sleep 0.2` ended meanwhile: the init reaped it, no zombie stays
        assert [s for s, _ in _states(rt, c.id).values()].count("Z") == 0
        assert sorted(comm for _, comm in _states(rt, c.id).values()) == ["flotilla-init", "sleep"]
        rt.stop(c.id)
        assert rt.get(c.id).exit_code == 143
    finally:
        rt.remove(c.id, force=True)
    for cmd, code in ((["sh", "-c", "exit 3"], 3), (["sh", "-c", "kill -9 $$"], 137)):
        out, got = run(rt, *cmd, init=True, network_mode="none")
        assert got == code, (cmd, out)
    with pytest.raises(StartFailed) as failed:
        rt.start(rt.create(ContainerSpec(image="busybox", cmd=["nosuch"], init=True, network_mode="none")).id)
    assert failed.value.exit_code == 127 and "executable file not found" in str(failed.value)


def test_stop_skips_the_grace_only_when_the_kernel_dropped_the_stop_signal(rt, unique):
    """busybox `sleep` as pid 1 has no SIGTERM handler, so the kernel drops the stop signal: `stop`
    goes on to SIGKILL instead of waiting out a 600 s grace period (137). A process that catches
    the signal still gets its grace and ends through its handler (3)."""
    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "1000"], network_mode="none", stop_timeout=600))
    rt.start(c.id)
    stopping = threading.Thread(target=rt.stop, args=(c.id,), daemon=True)
    stopping.start()
    stopping.join(120)
    assert not stopping.is_alive(), "stop waited for a signal the kernel had dropped"
    assert rt.get(c.id).exit_code == 137
    trap = rt.create(ContainerSpec(image="busybox", network_mode="none", stop_timeout=600,
                                   cmd=["sh", "-c", "trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done"]))
    rt.start(trap.id)
    wait_for(lambda: any(e.data == b"ready\n" for e in rt.logs(trap.id)))
    rt.stop(trap.id)
    assert rt.get(trap.id).exit_code == 3
