"""A real `swarmd agent` driven through the real `swarmctl`, for the CLI end-to-end tests.

Each agent gets its own state root, socket and cgroup parent `flotilla-test-<suffix>`, so
tests run next to other people's agents without touching them. `Agent.cleanup()` removes
what the tests left and `Agent.leaks()` lists whatever of this agent is still on the machine
(mounts, cgroups, processes), scoped to its own root and cgroup parent.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
CGROUP_ROOT = Path("/sys/fs/cgroup")
IMAGE = "busybox:latest"


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll until `predicate()` is truthy; return its value or fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Agent:
    def __init__(self, root: Path, suffix: str | None = None) -> None:
        self.suffix = suffix or uuid.uuid4().hex[:8]
        self.root = root
        self.socket = root / "agent.sock"
        self.cgroup_parent = f"flotilla-test-{self.suffix}"
        n = int(self.suffix, 16) if all(c in "0123456789abcdef" for c in self.suffix) else hash(self.suffix) & 0xFFFFFF
        self.default_subnet = f"10.{160 + n % 96}.{n // 96 % 256}.0/24"  # its own default bridge network
        self.proc: subprocess.Popen | None = None
        self.start_args: list[str] = []
        self.env = {**os.environ, "FLOTILLA_HOST": f"unix://{self.socket}"}

    # -- process ---------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start `swarmd agent` (its log in <root>/agent.log) without waiting for it: several
        agents of a cluster start side by side."""
        with open(self.root / "agent.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "swarmd"), "agent", "--root", str(self.root / "state"), "--listen-local",
                 f"unix://{self.socket}", "--cgroup-parent", self.cgroup_parent,
                 "--default-subnet", self.default_subnet, *self.start_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_for(lambda: self.proc.poll() is not None or self.ctl("ps", check=False).returncode == 0,
                 timeout, what="the agent to answer")
        assert self.proc.poll() is None, f"the agent died:\n{self.log()}"

    def stop(self) -> None:
        if getattr(self, "_channel", None) is not None:
            self._channel.close()
            self._channel = self._api_for = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def log(self) -> str:
        path = self.root / "agent.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- swarmctl --------------------------------------------------------------------
    def ctl(self, *args: str, input: bytes | str | None = None, check: bool = True,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
        text = not isinstance(input, bytes)
        res = subprocess.run([str(BIN / "swarmctl"), *args], input=input, capture_output=True, text=text,
                             env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"swarmctl {' '.join(args)} exited {res.returncode}: {res.stderr}")
        return res

    # -- the API directly, for the harness's own bookkeeping (the CLI is what tests test) --
    def api(self):
        """(stub, messages) of a gRPC client of this agent, made once per agent process."""
        if getattr(self, "_api_for", None) != self.proc:
            import grpc

            from flotilla.proto import runtime_pb2, runtime_pb2_grpc

            if getattr(self, "_channel", None) is not None:
                self._channel.close()
            self._channel = grpc.insecure_channel(f"unix://{self.socket}")
            self._api = (runtime_pb2_grpc.RuntimeStub(self._channel), runtime_pb2)
            self._api_for = self.proc
        return self._api

    def inspect(self, ref: str) -> dict:
        import json

        stub, pb = self.api()
        return json.loads(stub.InspectContainer(pb.ContainerRef(ref=ref), timeout=30).json)

    def status(self, ref: str) -> str:
        return self.inspect(ref)["State"]["Status"]

    def container_ids(self) -> list[str]:
        stub, pb = self.api()
        infos = stub.ListContainers(pb.ListContainersRequest(all=True), timeout=30).containers
        return [c.id for c in sorted(infos, key=lambda c: c.created, reverse=True)]

    # -- hygiene ---------------------------------------------------------------------
    def cleanup(self) -> None:
        """Remove every container (with volumes), every volume and every user network of this agent.

        A test that failed while the agent was down (kill -9 tests) gets it started again
        first, so that its containers are still removed."""
        import grpc

        if self.proc is None or self.proc.poll() is not None:
            self.start()
        stub, pb = self.api()
        for cid in self.container_ids():
            with contextlib.suppress(grpc.RpcError):  # --rm may remove it meanwhile
                stub.RemoveContainer(pb.RemoveRequest(ref=cid, force=True, volumes=True), timeout=60)
        for volume in stub.ListVolumes(pb.Empty(), timeout=30).volumes:
            stub.RemoveVolume(pb.RemoveVolumeRequest(name=volume.name, force=True), timeout=30)
        for network in stub.ListNetworks(pb.Empty(), timeout=30).networks:
            if network.name not in ("bridge", "host", "none"):  # user networks outlive their containers
                stub.RemoveNetwork(pb.NetworkRef(ref=network.id), timeout=30)

    def netns_dir(self) -> str:
        """Where this agent's network instance bind-mounts its containers' namespaces (/run/flotilla/netns-<hash>/)."""
        from flotilla.runtime.netwiring import instance_for
        from flotilla.runtime.network.names import Names

        return str(Names(instance_for(self.cgroup_parent)).netns_dir) + "/"

    def leaks(self) -> list[str]:
        """Mounts (in the state root or the network instance's netns dir), container cgroups and
        processes of this agent still present."""
        found = []
        state, netns = str(self.root), self.netns_dir()
        with open("/proc/self/mountinfo") as f:
            found += [f"mount: {line.strip()}" for line in f if state in line or netns in line]
        for parent in CGROUP_ROOT.glob(f"*/{self.cgroup_parent}"):
            found += [f"cgroup: {child}" for child in parent.iterdir() if child.is_dir()]
        agent_pid = self.proc.pid if self.proc and self.proc.poll() is None else None
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) in (agent_pid, os.getpid()):
                continue
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cgroups = (pid_dir / "cgroup").read_text()
            except OSError:
                continue
            if (state in cmdline and "swarmd" not in cmdline) or self.cgroup_parent in cgroups:
                found.append(f"process {pid_dir.name}: {cmdline.strip()}")
        return found

    def remove_cgroup_parents(self) -> None:
        """The parent cgroups are the agent's; remove them (empty) once it has stopped."""
        for parent in CGROUP_ROOT.glob(f"*/{self.cgroup_parent}"):
            if parent.parent.is_symlink() or not parent.exists():  # cpu -> cpu,cpuacct: the same directory
                continue
            for child in sorted(parent.rglob("*"), reverse=True):
                if child.is_dir():
                    child.rmdir()
            parent.rmdir()


def drive_pty(agent: "Agent", argv: list[str], typed: bytes, prompt: bytes = b"# ",
              timeout: float = 30.0) -> tuple[bytes, int]:
    """Run swarmctl on a real 24x80 pty (it sees a terminal), type `typed` at the first prompt;
    returns everything the terminal showed and swarmctl's exit code."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.environ["FLOTILLA_HOST"] = f"unix://{agent.socket}"
        os.execv(str(BIN / "swarmctl"), ["swarmctl", *argv])
    output, sent = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not sent and prompt in output:
                os.write(fd, typed)
                sent = True
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert sent, f"no prompt {prompt!r} in {output!r}"
    return output, os.waitstatus_to_exitcode(status)


def started_agent(root: Path, busybox_tar: Path) -> Agent:
    """An agent with the busybox image imported (as `busybox:latest`, CMD sh)."""
    root.mkdir(parents=True, exist_ok=True)
    agent = Agent(root)
    agent.start()
    agent.ctl("image", "import", "-c", 'CMD ["sh"]', str(busybox_tar), IMAGE)
    return agent


def shut_down(agent: Agent) -> None:
    """Remove everything, stop the agent, and fail if anything of it is left on the machine."""
    try:
        agent.cleanup()
        wait_for(lambda: not agent.leaks(), 10, what="containers to be gone")
    finally:
        agent.stop()
        agent.remove_cgroup_parents()
    leaks = agent.leaks()
    assert not leaks, "left behind:\n" + "\n".join(leaks)


# -- pytest fixtures (imported by the test_cli_* modules) -----------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def agent(tmp_path_factory, busybox_tar) -> Agent:
    """A `swarmd agent` shared by the tests of one module (its own root, socket, cgroup parent)."""
    agent = started_agent(tmp_path_factory.mktemp("agent"), busybox_tar)
    yield agent
    shut_down(agent)


@pytest.fixture
def ctl(agent):
    """`ctl(*args)` runs swarmctl against the module's agent; after the test nothing of it may remain."""
    yield agent.ctl
    agent.cleanup()
    wait_for(lambda: not agent.leaks(), 10, what="the test's containers to leave nothing behind")
