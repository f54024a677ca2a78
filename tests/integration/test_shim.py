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
        cfg = ShimConfig.for_exec(kw.pop("pid"), args, env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], **kw)
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


def _working_in(directory: Path) -> list[int]:
    """Processes whose working directory is `directory` (a shim, and anything it forked, works in its bundle)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd") == str(directory) and _alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_the_overlay_is_let_go_after_the_exit_by_a_child_of_the_shim(bundle):
    """The shim holds the container's overlay past its exit and hands that last reference to a child
    that exits at once (the kernel's sync of the upper filesystem runs there, after the exit status
    is written): what the container wrote is in the upper dir, and nothing stays behind."""
    status, _, _ = bundle.run(["sh", "-c", "echo kept > /written"])
    assert (status.code, status.signal) == (0, 0)
    assert (bundle.dir / "upper" / "written").read_text() == "kept\n"
    deadline = time.monotonic() + 10
    while _working_in(bundle.dir):
        assert time.monotonic() < deadline, f"left running in the bundle: {_working_in(bundle.dir)}"
        time.sleep(0.01)


def test_exit_code(bundle):
    status, _, _ = bundle.run(["sh", "-c", "exit 42"])
    assert (status.code, status.signal) == (42, 0)


def test_kill_gives_137(bundle):
    proc = bundle.start(["sleep", "1000"])
    with pytest.raises(TimeoutError):
        proc.wait(timeout=0.05)
    os.kill(proc.pid, signal.SIGKILL)
    status = proc.wait(timeout=30)
    assert (status.code, status.signal) == (137, 9)


def wait_for_log(bundle: Bundle, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in bundle.log("stdout"):
        assert time.monotonic() < deadline, f"{text!r} never appeared in the log"
        time.sleep(0.01)


def test_sigterm_to_shim_is_forwarded(bundle):
    proc = bundle.start(["sh", "-c", "trap 'exit 9' TERM; echo trapped; while :; do sleep 0.05; done"])
    wait_for_log(bundle, "trapped")
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
    # Input from the second client is read only once the shim accepted it, so both see the output.
    second.sendall(shim.encode_frame(shim.STDIN, b"it\n"))
    results = [shim.collect(s) for s in (proc.attach, second)]
    for s in (proc.attach, second):
        s.close()
    assert results == [(b"got it\n", b"", 3)] * 2


def test_tty_and_resize(bundle):
    proc = bundle.start(["sh", "-c", "test -t 0 && test -t 1 && echo ISTTY; read x; stty size; tty; stty -F /dev/console size"],
                        attach=True, wait_attach=True, stdin=True, tty=True)
    sock = proc.attach
    sock.sendall(shim.encode_frame(shim.RESIZE, shim.resize_payload(40, 123)))
    sock.sendall(shim.encode_frame(shim.STDIN, b"go\n"))
    out, err, code = shim.collect(sock)
    sock.close()
    assert code == 0
    text = out.decode()
    assert "ISTTY" in text
    assert text.count("40 123") == 2  # /dev/console is the same terminal
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
    with pytest.raises(ShimError, match="is not a container"):
        bundle.exec("e4", ["true"], pid=os.getpid())  # a host process: never exec into the host
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


def test_started_is_announced_once_also_for_a_failing_start(bundle):
    """`on_started` gets the pids once (the same `run` returns), also for a start that then fails."""
    seen: list[tuple[int, int]] = []

    def on_started(pid: int, shim_pid: int) -> None:
        seen.append((pid, shim_pid))

    bundle.config(["sleep", "100"]).write(bundle.dir / "shim.conf")
    proc = shim.run(bundle.dir, on_started=on_started)
    bundle.pids += [proc.shim_pid, proc.pid]
    assert seen == [(proc.pid, proc.shim_pid)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    (bundle.dir / "exit").unlink()
    seen.clear()
    bundle.config(["nosuch"]).write(bundle.dir / "shim.conf")
    with pytest.raises(ShimError) as e:
        shim.run(bundle.dir, on_started=on_started)
    assert e.value.exit_code == 127 and len(seen) == 1


def _rmdir_soon(path: Path) -> None:
    """rmdir a cgroup whose last task may still be exiting."""
    deadline = time.monotonic() + 5
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_v1_and_v2_cgroups_are_joined_by_the_container_its_children_and_execs(bundle, unique):
    """v1 directories are joined through `tasks`, the cgroup2 one at clone time; the result must be
    what a `cgroup.procs` move gives: the init and everything it forks (and every exec) in each."""
    v1 = Path(f"/sys/fs/cgroup/pids/flotilla-test-{unique}")
    v2 = Path(f"/sys/fs/cgroup/unified/flotilla-test-{unique}")
    if not v2.parent.is_dir() or not v1.parent.is_dir():
        pytest.skip("needs the hybrid layout (pids v1 hierarchy and the cgroup2 unified mount)")
    v1.mkdir()
    v2.mkdir()
    try:
        ctr = bundle.start(["sh", "-c", "cat /proc/self/cgroup; sleep 100 & sleep 100 & read x"], cgroups=[str(v1), str(v2)],
                           stdin=True)
        host_view = Path(f"/proc/{ctr.pid}/cgroup").read_text().splitlines()
        assert f"0::/flotilla-test-{unique}" in host_view
        assert any(line.endswith(f":pids:/flotilla-test-{unique}") for line in host_view)
        deadline = time.monotonic() + 10
        while len((v1 / "cgroup.procs").read_text().split()) != 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        procs_v1 = sorted((v1 / "cgroup.procs").read_text().split())
        assert procs_v1 == sorted((v2 / "cgroup.procs").read_text().split())
        assert str(ctr.pid) in procs_v1 and len(procs_v1) == 3  # sh and its two sleeps
        ex = bundle.exec("cg", ["cat", "/proc/self/cgroup"], pid=ctr.pid, cgroups=[str(v1), str(v2)], attach=True,
                         wait_attach=True)
        out, _, code = shim.collect(ex.attach)
        ex.attach.close()
        exec_view = out.decode().splitlines()
        assert code == 0 and "0::/" in exec_view and not [v for v in exec_view if v.endswith("/..")]  # joined
        with shim.connect_attach(bundle.dir / "attach.sock") as sock:
            sock.sendall(shim.encode_frame(shim.STDIN, b"go\n"))
            shim.collect(sock)
        ctr.wait(timeout=30)
        inside = bundle.log("stdout").splitlines()
        assert "0::/" in inside and any(line.endswith(":pids:/") for line in inside)  # namespace rooted there
    finally:
        for cg in (v1, v2):
            for pid in cg.joinpath("cgroup.procs").read_text().split() if cg.exists() else []:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _rmdir_soon(cg)


def test_the_cgroup2_directory_fd_never_reaches_a_container_process(bundle, unique):
    """The shim opens the container's cgroup2 directory for CLONE_INTO_CGROUP; an exec whose
    workdir is /proc/self/fd/<n> (CVE-2024-21626's trick) must not find it open."""
    v2 = Path(f"/sys/fs/cgroup/unified/flotilla-test-{unique}")
    if not v2.parent.is_dir():
        pytest.skip("needs a cgroup2 mount at /sys/fs/cgroup/unified")
    v2.mkdir()
    try:
        ctr = bundle.start(["sleep", "100"], cgroups=[str(v2)])
        for n in range(3, 40):
            try:
                ex = bundle.exec(f"fd{n}", ["stat", "-f", "-c", "%t", "."], pid=ctr.pid, cwd=f"/proc/self/fd/{n}",
                                 cgroups=[str(v2)], attach=True, wait_attach=True)
            except ShimError:
                continue  # no such fd, or not a directory: the exec is refused
            out, _, _ = shim.collect(ex.attach)
            ex.attach.close()
            assert out.strip() != b"63677270", f"fd {n} of an exec is the host's cgroup2 directory"
        os.kill(ctr.pid, signal.SIGKILL)
        ctr.wait(timeout=30)
    finally:
        for pid in v2.joinpath("cgroup.procs").read_text().split() if v2.exists() else []:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        _rmdir_soon(v2)


def test_bad_cgroup_directories_are_refused(bundle, unique, tmp_path):
    with pytest.raises(ShimError, match="is not on a cgroup filesystem"):
        bundle.start(["true"], cgroups=[str(tmp_path)])
    root2 = Path("/sys/fs/cgroup/unified")
    if not root2.is_dir():
        return
    dirs = [root2 / f"flotilla-test-{unique}-{i}" for i in range(2)]
    for d in dirs:
        d.mkdir()
    try:
        with pytest.raises(ShimError, match="only one cgroup2 directory"):
            bundle.start(["true"], cgroups=[str(d) for d in dirs])
    finally:
        for d in dirs:
            d.rmdir()


def test_cgroup_limits_apply(bundle, unique):
    cg = Path(f"/sys/fs/cgroup/pids/flotilla-test-{unique}")
    cg.mkdir()
    try:
        (cg / "pids.max").write_text("3")
        proc = bundle.start(["sh", "-c", "read x; for i in 1 2 3 4 5; do sleep 5 & done; wait"], cgroups=[str(cg)],
                            stdin=True)
        assert str(proc.pid) in (cg / "cgroup.procs").read_text().split()
        with shim.connect_attach(bundle.dir / "attach.sock") as sock:
            sock.sendall(shim.encode_frame(shim.STDIN, b"go\n"))
            shim.collect(sock)
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


def test_large_output_reaches_log_and_client_intact(bundle):
    proc = bundle.start(["sh", "-c", "seq 1 60000; seq 1 3000 >&2"], attach=True, wait_attach=True)
    out, err, code = shim.collect(proc.attach)
    proc.attach.close()
    assert code == 0
    expected = "".join(f"{i}\n" for i in range(1, 60001))
    assert out.decode() == expected
    assert err.decode() == "".join(f"{i}\n" for i in range(1, 3001))
    proc.wait(timeout=30)
    entries = bundle.log_entries()
    assert [e["log"] for e in entries if e["stream"] == "stdout"] == [f"{i}\n" for i in range(1, 60001)]


def test_exec_with_tty_and_oom_score_adj(bundle):
    ctr = bundle.start(["sleep", "1000"], oom_score_adj=300)
    ex = bundle.exec("t1", ["sh", "-c", "test -t 1 && echo TTY; cat /proc/1/oom_score_adj"], pid=ctr.pid, tty=True,
                     attach=True, wait_attach=True)
    out, _, code = shim.collect(ex.attach)
    ex.attach.close()
    assert code == 0
    assert out.decode().split() == ["TTY", "300"]
    ex.wait(timeout=30)
    os.kill(ctr.pid, signal.SIGKILL)
    ctr.wait(timeout=30)


def test_killing_the_shim_kills_the_container(bundle):
    proc = bundle.start(["sleep", "1000"])
    os.kill(proc.shim_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(proc.pid)  # no orphan that nobody would reap or log


def test_process_starts_clean(bundle):
    """Only fds 0-2, default signal dispositions, nothing blocked, umask 022, only the given env."""
    status, out, _ = bundle.run(["sh", "-c", "ls /proc/$$/fd; grep -E '^Sig(Blk|Ign)' /proc/self/status; umask; env | sort"],
                                env=["PATH=/bin", "A=1"])
    assert status.code == 0
    lines = out.split()
    assert lines[:3] == ["0", "1", "2"]
    assert "SigBlk:\t0000000000000000" in out and "SigIgn:\t0000000000000000" in out
    assert "0022" in lines
    assert [line for line in out.splitlines() if "=" in line] == ["A=1", "HOME=/root", "PATH=/bin", "PWD=/", "SHLVL=1"]


def test_wait_attach_gives_up_when_the_runtime_goes_away(bundle):
    bundle.config(["true"], wait_attach=True).write(bundle.dir / "shim.conf")
    report = shim._spawn([str(shim.SHIM_PATH), "run", str(bundle.dir)])
    assert os.read(report, 100) == b"ready\n"
    shim_pid = int((bundle.dir / "shim.pid").read_text())
    bundle.pids.append(shim_pid)
    os.close(report)  # the runtime died before connecting
    deadline = time.monotonic() + 30
    while _alive(shim_pid):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert shim.read_exit(bundle.dir / "exit").code == 125
    assert not (bundle.dir / "attach.sock").exists()


def test_restart_keeps_the_upper_layer(bundle):
    """A restart mounts the same upper dir again at once: the previous overlay is gone with its namespace."""
    first, _, _ = bundle.run(["sh", "-c", "echo kept > /state"])
    second, out, _ = bundle.run(["cat", "/state"])
    assert (first.code, second.code) == (0, 0)
    assert out == "kept\n"
    assert (bundle.dir / "upper" / "state").read_text() == "kept\n"
