"""The shim against the real kernel: busybox as the only lower dir, tmp dirs for the rest.

Every test runs through `flotilla.runtime.shim` (the wrapper the runtime uses) and checks,
through the `bundle` fixture, that no mount and no process of the test is left behind.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flotilla.runtime import shim
from flotilla.runtime.shim import BindMount, Rlimit, ShimConfig, ShimError

pytestmark = pytest.mark.root

DOCKER_CAPS_HEX = "00000000a80425fb"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class Bundle:
    """A container bundle in a tmp dir, plus the pids it started (for cleanup and leak checks)."""

    def __init__(self, root: Path, lower: Path, unique: str) -> None:
        self.dir = root / f"bundle-{unique}"
        self.unique = unique
        self.lower = [str(lower)]
        self.pids: list[int] = []
        for d in ("upper", "work", "rootfs", "exec"):
            (self.dir / d).mkdir(parents=True)

    def config(self, args: list[str], **kw) -> ShimConfig:
        base = dict(
            args=args, env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], hostname=f"h-{self.unique}",
            lowerdir=self.lower, upperdir=str(self.dir / "upper"), workdir=str(self.dir / "work"),
            rootfs=str(self.dir / "rootfs"), log=str(self.dir / "ctr-json.log"),
        )
        base.update(kw)
        return ShimConfig(**base)

    def start(self, args: list[str], attach: bool = False, **kw) -> shim.ShimProcess:
        self.config(args, **kw).write(self.dir / "shim.conf")
        proc = shim.run(self.dir, wait_attach=attach)
        self.pids += [proc.shim_pid, proc.pid]
        return proc

    def run(self, args: list[str], **kw) -> tuple[shim.ExitStatus, str, str]:
        """Run to completion; returns (exit status, stdout, stderr) as read back from the json log."""
        status = self.start(args, **kw).wait(timeout=30)
        return status, self.log("stdout"), self.log("stderr")

    def exec(self, exec_id: str, args: list[str], attach: bool = False, **kw) -> shim.ShimProcess:
        cfg = ShimConfig(args=args, env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], namespaces=[], masked=[],
                         readonly_paths=[], **kw)
        cfg.write(self.dir / "exec" / f"{exec_id}.conf")
        proc = shim.exec(self.dir, exec_id, wait_attach=attach)
        self.pids += [proc.shim_pid, proc.pid]
        return proc

    def log_entries(self) -> list[dict]:
        path = self.dir / "ctr-json.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def log(self, stream: str) -> str:
        return "".join(e["log"] for e in self.log_entries() if e["stream"] == stream)


@pytest.fixture
def bundle(tmp_path, unique, busybox_rootfs):
    b = Bundle(tmp_path, busybox_rootfs, unique)
    yield b
    # A shim that has sent its exit frame may still be a moment away from exiting.
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in b.pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    leaked = [p for p in b.pids if _alive(p)]
    for p in leaked:
        os.kill(p, signal.SIGKILL)
    mounts = [line for line in open("/proc/self/mountinfo") if unique in line]
    assert not leaked, f"processes left running: {leaked}"
    assert not mounts, f"mounts left behind: {mounts}"


def test_true_exits_zero(bundle):
    status, out, err = bundle.run(["/bin/true"])
    assert (status.code, status.signal) == (0, 0)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", status.finished)
    assert (bundle.dir / "init.pid").read_text().strip().isdigit()
    assert (bundle.dir / "shim.pid").read_text().strip().isdigit()
    assert not (bundle.dir / "attach.sock").exists()


def test_exit_code(bundle):
    status, _, _ = bundle.run(["sh", "-c", "exit 42"])
    assert (status.code, status.signal) == (42, 0)


def test_kill_gives_137(bundle):
    proc = bundle.start(["sleep", "1000"])
    os.kill(proc.pid, signal.SIGKILL)
    status = proc.wait(timeout=30)
    assert (status.code, status.signal) == (137, 9)


def test_sigterm_to_shim_is_forwarded(bundle):
    proc = bundle.start(["sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.05; done"])
    time.sleep(0.3)  # let the shell install its trap
    os.kill(proc.shim_pid, signal.SIGTERM)
    assert proc.wait(timeout=30).code == 9


def test_pid_namespace_and_hostname(bundle, unique):
    status, out, _ = bundle.run(["sh", "-c", "echo $$; hostname; ls /proc | grep -c '^[0-9]'"])
    pid1, hostname, nprocs = out.split()
    assert status.code == 0
    assert pid1 == "1"
    assert hostname == f"h-{unique}"
    assert int(nprocs) <= 3  # sh, ls, grep: no host process is visible


def test_sys_readonly_and_masked_paths(bundle):
    script = (
        "touch /sys/x 2>/dev/null && echo SYSRW; "
        "echo -n kcore:; cat /proc/kcore | wc -c; "
        "echo -n firmware:; ls /sys/firmware | wc -l; "
        "echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo PROCSYSRW; "
        "grep -E ' /(sys|proc/sys) ' /proc/self/mountinfo"
    )
    status, out, _ = bundle.run(["sh", "-c", script])
    assert status.code == 0
    assert "SYSRW" not in out and "PROCSYSRW" not in out
    assert "kcore:0" in out and "firmware:0" in out
    for line in out.splitlines()[2:]:
        assert " ro," in line or " ro " in line, line


def test_capabilities_no_new_privs_and_mount_denied(bundle):
    script = "grep -E '^(CapEff|CapBnd|CapPrm|CapAmb|NoNewPrivs)' /proc/self/status; mount -t tmpfs none /mnt && echo MOUNTED"
    status, out, _ = bundle.run(["sh", "-c", script])
    fields = dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)
    assert fields["CapEff"] == DOCKER_CAPS_HEX
    assert fields["CapBnd"] == DOCKER_CAPS_HEX
    assert fields["CapAmb"] == "0000000000000000"
    assert fields["NoNewPrivs"] == "1"
    assert "MOUNTED" not in out


@pytest.mark.parametrize("user,expect", [
    ("1000:1000", "uid=1000(app) gid=1000(app)"),  # an explicit group: no supplementary groups (runc)
    ("app", "uid=1000(app) gid=1000(app) groups=50(staff)"),  # staff lists app as a member
    ("app:staff", "uid=1000(app) gid=50(staff)"),
    ("2000:50", "uid=2000 gid=50(staff)"),  # ids without a passwd entry are fine
])
def test_user_switch(bundle, user, expect):
    status, out, _ = bundle.run(["sh", "-c", "id; grep CapEff /proc/self/status; echo $HOME"], user=user)
    assert status.code == 0
    lines = out.splitlines()
    assert lines[0] == expect
    assert lines[1].endswith("0000000000000000")  # a non-root user keeps no effective capability
    assert lines[2] == ("/" if user.startswith("2000") else "/home/app")


def test_unknown_user_fails(bundle):
    with pytest.raises(ShimError) as e:
        bundle.start(["true"], user="nosuchuser")
    assert e.value.exit_code == 125
    assert "unable to find user nosuchuser" in e.value.message
    assert shim.read_exit(bundle.dir / "exit").code == 125


def test_workdir_env_rlimits(bundle):
    status, out, _ = bundle.run(
        ["sh", "-c", "pwd; echo $FOO; ulimit -n; ulimit -Hn"], cwd="/new/work dir",
        env=["PATH=/bin", "FOO=bar baz"], rlimits=[Rlimit("NOFILE", 1024, 2048)],
    )
    assert status.code == 0
    assert out.splitlines() == ["/new/work dir", "bar baz", "1024", "2048"]


def test_readonly_rootfs(bundle):
    status, out, _ = bundle.run(["sh", "-c", "touch /x 2>/dev/null && echo WROTE; touch /dev/shm/y && echo SHM"],
                                readonly=True)
    assert out.split() == ["SHM"]


def test_bind_mounts_ro_and_rw(bundle, tmp_path, unique):
    rw = tmp_path / f"rw-{unique}"
    ro = tmp_path / f"ro-{unique}"
    rw.mkdir()
    ro.mkdir()
    (ro / "f").write_text("host data")
    status, out, _ = bundle.run(
        ["sh", "-c", "echo written > /data/rw/out; cat /data/ro/f; echo; touch /data/ro/g 2>/dev/null && echo ROWRITE; true"],
        mounts=[BindMount(str(rw), "/data/rw"), BindMount(str(ro), "/data/ro", readonly=True)],
    )
    assert status.code == 0
    assert out.split("\n")[0] == "host data"
    assert "ROWRITE" not in out
    assert (rw / "out").read_text() == "written\n"
    assert not (ro / "g").exists()


def test_hostile_symlink_cannot_redirect_a_mount_to_the_host(bundle, tmp_path, unique):
    # A second, topmost image layer: /data -> /etc, and /up -> ../../../../.. (a relative escape).
    layer = tmp_path / f"layer-{unique}"
    layer.mkdir()
    os.symlink("/etc", layer / "data")
    os.symlink("../../../../../../../..", layer / "up")
    src = tmp_path / f"src-{unique}"
    src.mkdir()
    (src / "marker").write_text("bound")
    target = f"x-{unique}"
    status, out, _ = bundle.run(
        ["sh", "-c", f"cat /etc/{target}/marker; echo; cat /tmp/{target}/marker"],
        lowerdir=[str(layer)] + bundle.lower,
        mounts=[BindMount(str(src), f"/data/{target}"), BindMount(str(src), f"/up/tmp/{target}")],
    )
    assert status.code == 0
    assert out.split() == ["bound", "bound"]  # both landed inside the container
    assert not Path(f"/etc/{target}").exists()
    assert not Path(f"/tmp/{target}").exists()


def test_missing_command_is_127(bundle):
    with pytest.raises(ShimError) as e:
        bundle.start(["nosuch"])
    assert e.value.exit_code == 127
    assert e.value.message == 'exec: "nosuch": executable file not found in $PATH'
    assert shim.read_exit(bundle.dir / "exit").code == 127


def test_missing_path_is_127_and_not_executable_is_126(bundle):
    with pytest.raises(ShimError) as e:
        bundle.start(["/no/such"])
    assert e.value.exit_code == 127
    with pytest.raises(ShimError) as e:
        bundle.start(["/etc/passwd"])
    assert e.value.exit_code == 126
    assert "permission denied" in e.value.message


def test_json_log_lines_and_escaping(bundle):
    script = r"""printf 'one\ntwo "q" \\ \t<&>\n'; printf 'bad \377 utf8 \303\251\n' >&2; printf 'tail'"""
    status, _, _ = bundle.run(["sh", "-c", script])
    assert status.code == 0
    entries = bundle.log_entries()
    out = [e["log"] for e in entries if e["stream"] == "stdout"]
    err = [e["log"] for e in entries if e["stream"] == "stderr"]
    assert out == ["one\n", 'two "q" \\ \t<&>\n', "tail"]
    assert err == ["bad \ufffd utf8 \u00e9\n"]
    raw = (bundle.dir / "ctr-json.log").read_text()
    assert "\\u003c\\u0026\\u003e" in raw  # escaped as Docker (Go) does
    for e in entries:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", e["time"])


def test_attach_stdin_cat(bundle):
    proc = bundle.start(["cat"], attach=True, wait_attach=True, stdin=True)
    sock = proc.attach
    sock.sendall(shim.encode_frame(shim.STDIN, b"hello\n") + shim.encode_frame(shim.STDIN_CLOSE))
    out, err, code = shim.collect(sock)
    sock.close()
    assert (out, err, code) == (b"hello\n", b"", 0)
    assert proc.wait(timeout=30).code == 0
    assert bundle.log("stdout") == "hello\n"


def test_several_clients_get_output(bundle):
    proc = bundle.start(["sh", "-c", "read x; echo got $x; exit 3"], attach=True, wait_attach=True, stdin=True)
    second = shim.connect_attach(bundle.dir / "attach.sock")
    time.sleep(0.1)  # the shim accepts the second client before output starts
    proc.attach.sendall(shim.encode_frame(shim.STDIN, b"it\n"))
    results = [shim.collect(s) for s in (proc.attach, second)]
    for s in (proc.attach, second):
        s.close()
    assert results == [(b"got it\n", b"", 3)] * 2


def test_tty_and_resize(bundle):
    proc = bundle.start(["sh", "-c", "test -t 0 && test -t 1 && echo ISTTY; read x; stty size; tty"],
                        attach=True, wait_attach=True, stdin=True, tty=True)
    sock = proc.attach
    sock.sendall(shim.encode_frame(shim.RESIZE, shim.resize_payload(40, 123)))
    sock.sendall(shim.encode_frame(shim.STDIN, b"go\n"))
    out, err, code = shim.collect(sock)
    sock.close()
    assert code == 0
    text = out.decode()
    assert "ISTTY" in text
    assert "40 123" in text
    assert re.search(r"/dev/pts/\d+", text)
    assert err == b""
    assert all(e["stream"] == "stdout" for e in bundle.log_entries())


def test_exec_joins_the_container(bundle, unique):
    ctr = bundle.start(["sleep", "1000"])
    ex = bundle.exec("e1", ["sh", "-c", "hostname; ps -o pid,comm | grep -w sleep; exit 7"], pid=ctr.pid,
                     attach=True, wait_attach=True)
    out, _, code = shim.collect(ex.attach)
    ex.attach.close()
    assert code == 7
    assert ex.wait(timeout=30).code == 7
    assert shim.read_exit(bundle.dir / "exec" / "e1.exit").code == 7
    lines = out.decode().split("\n")
    assert lines[0] == f"h-{unique}"
    assert lines[1].split() == ["1", "sleep"]  # the container's init is pid 1 in the same namespace
    assert _alive(ctr.pid)
    os.kill(ctr.pid, signal.SIGKILL)
    assert ctr.wait(timeout=30).code == 137
    assert "" == bundle.log("stdout")  # exec output is not logged


def test_exec_user_and_missing_command(bundle):
    ctr = bundle.start(["sleep", "1000"])
    ex = bundle.exec("e2", ["id", "-u"], pid=ctr.pid, user="app", attach=True, wait_attach=True)
    out, _, code = shim.collect(ex.attach)
    ex.attach.close()
    assert (out, code) == (b"1000\n", 0)
    with pytest.raises(ShimError) as e:
        bundle.exec("e3", ["nosuch"], pid=ctr.pid)
    assert e.value.exit_code == 127
    os.kill(ctr.pid, signal.SIGKILL)
    ctr.wait(timeout=30)


def test_cgroup_join_and_namespace(bundle, unique):
    cg = Path(f"/sys/fs/cgroup/pids/flotilla-test-{unique}")
    cg.mkdir()
    try:
        status, out, _ = bundle.run(["sh", "-c", "grep pids /proc/self/cgroup"],
                                    cgroups=[str(cg)])
        assert status.code == 0
        assert out.splitlines()[0].endswith(":pids:/")  # its own cgroup is the root of its cgroup namespace
    finally:
        deadline = time.monotonic() + 5
        while True:
            try:
                cg.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def test_cgroup_limits_apply(bundle, unique):
    cg = Path(f"/sys/fs/cgroup/pids/flotilla-test-{unique}")
    cg.mkdir()
    try:
        (cg / "pids.max").write_text("3")
        proc = bundle.start(["sh", "-c", "sleep 0.3; for i in 1 2 3 4 5; do sleep 5 & done; wait"], cgroups=[str(cg)])
        time.sleep(0.1)
        assert str(proc.pid) in (cg / "cgroup.procs").read_text().split()
        proc.wait(timeout=30)
        assert "fork" in bundle.log("stderr").lower() or "resource" in bundle.log("stderr").lower()
    finally:
        deadline = time.monotonic() + 5
        while True:
            try:
                cg.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def test_join_existing_netns(bundle, unique):
    name = f"fl-{unique}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        status, out, _ = bundle.run(["readlink", "/proc/self/ns/net"], netns=f"/run/netns/{name}",
                                    namespaces=["pid", "mnt", "uts", "ipc", "cgroup"])
        assert status.code == 0
        assert out.strip() == f"net:[{os.stat(f'/run/netns/{name}').st_ino}]"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_shim_survives_the_death_of_its_starter(bundle):
    bundle.config(["sh", "-c", "sleep 0.5; echo after"]).write(bundle.dir / "shim.conf")
    starter = (
        "import os, sys\n"
        "from flotilla.runtime import shim\n"
        f"p = shim.run({str(bundle.dir)!r})\n"
        "print(p.shim_pid, p.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    res = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=30)
    assert res.returncode == -9
    shim_pid, pid = (int(x) for x in res.stdout.split())
    bundle.pids += [shim_pid, pid]
    status = shim.ShimProcess(shim_pid=shim_pid, pid=pid, exit_path=bundle.dir / "exit").wait(timeout=30)
    assert status.code == 0
    assert bundle.log("stdout") == "after\n"


def test_attach_socket_path_longer_than_sun_path(tmp_path, unique, busybox_rootfs):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    b = Bundle(deep, busybox_rootfs, unique)
    try:
        proc = b.start(["echo", "long"], attach=True, wait_attach=True)
        out, _, code = shim.collect(proc.attach)
        proc.attach.close()
        assert (out, code) == (b"long\n", 0)
        proc.wait(timeout=30)
    finally:
        for p in b.pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
    assert not [line for line in open("/proc/self/mountinfo") if unique in line]


def test_bad_conf_is_reported(bundle):
    (bundle.dir / "shim.conf").write_bytes(b"arg=true\0bogus=1\0")
    with pytest.raises(ShimError) as e:
        shim.run(bundle.dir)
    assert (e.value.exit_code, e.value.message) == (125, 'shim.conf: unknown key "bogus"')


def test_attach_late_and_detach(bundle):
    proc = bundle.start(["sh", "-c", "read x; echo $x"], stdin=True)
    sock = shim.connect_attach(bundle.dir / "attach.sock")
    sock.sendall(shim.encode_frame(shim.STDIN, b"late\n"))
    out, _, code = shim.collect(sock)
    sock.close()
    assert (out, code) == (b"late\n", 0)
    proc.wait(timeout=30)


def test_client_disconnect_does_not_stop_the_container(bundle):
    proc = bundle.start(["sh", "-c", "read x; echo $x"], attach=True, wait_attach=True, stdin=True)
    proc.attach.close()
    sock = shim.connect_attach(bundle.dir / "attach.sock")
    sock.sendall(shim.encode_frame(shim.STDIN, b"again\n"))
    sock.settimeout(30)
    out, _, code = shim.collect(sock)
    sock.close()
    assert (out, code) == (b"again\n", 0)
    proc.wait(timeout=30)
