"""The Python side of the shim: the runtime drives containers through this module and never
touches the bytes of the protocol (docs/architecture.md, "The shim").

- `ShimConfig` encodes and validates `shim.conf` / `exec/<id>.conf` and writes it atomically.
- `run()` / `exec()` spawn `flotilla-shim`, read its report and return a `ShimProcess`
  (or raise `ShimError` with Docker's exit code and message).
- `read_exit()` parses the exit file; `encode_frame` / `FrameDecoder` are the attach protocol.

Spawning sits on the hot path of `docker run`, so it uses `os.posix_spawn` (vfork + exec, no
Python code in the child) with the report pipe as the only inherited descriptor.
"""
from __future__ import annotations

import os
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SHIM_PATH = Path(__file__).resolve().parent / "native" / "flotilla-shim"

# Capability numbers (linux/capability.h) of Docker's default set.
CAP_CHOWN = 0
CAP_DAC_OVERRIDE = 1
CAP_FOWNER = 3
CAP_FSETID = 4
CAP_KILL = 5
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SETPCAP = 8
CAP_NET_BIND_SERVICE = 10
CAP_NET_RAW = 13
CAP_SYS_CHROOT = 18
CAP_MKNOD = 27
CAP_AUDIT_WRITE = 29
CAP_SETFCAP = 31
DEFAULT_CAPS: tuple[int, ...] = (
    CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FSETID, CAP_FOWNER, CAP_MKNOD, CAP_NET_RAW, CAP_SETGID,
    CAP_SETUID, CAP_SETFCAP, CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_KILL,
    CAP_AUDIT_WRITE,
)

# Docker's defaults (moby oci/defaults.go): hidden from the container, and read-only in it.
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)
ALL_NAMESPACES: tuple[str, ...] = ("pid", "mnt", "uts", "ipc", "net", "cgroup")
RLIMIT_NAMES = frozenset({
    "AS", "CORE", "CPU", "DATA", "FSIZE", "LOCKS", "MEMLOCK", "MSGQUEUE", "NICE", "NOFILE",
    "NPROC", "RSS", "RTPRIO", "RTTIME", "SIGPENDING", "STACK",
})

# Attach frame types (shim -> client: STDOUT, STDERR, EXIT; client -> shim: STDIN, STDIN_CLOSE, RESIZE).
STDIN, STDOUT, STDERR, EXIT, STDIN_CLOSE, RESIZE = 0, 1, 2, 3, 4, 5
_HEADER = struct.Struct(">B3xI")
MAX_FRAME = 1 << 20  # the shim drops a client that sends a larger frame


class ShimError(Exception):
    """The container could not be started; `exit_code` is Docker's (125 setup, 126, 127)."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class BindMount:
    """A host path bind-mounted into the container (`mount` record)."""

    source: str
    destination: str
    readonly: bool = False
    recursive: bool = True

    def encode(self) -> str:
        for name, value in (("source", self.source), ("destination", self.destination)):
            if "\t" in value or not value.startswith("/"):
                raise ValueError(f"bind mount {name} {value!r} must be an absolute path without tabs")
        opts = ["ro" if self.readonly else "rw"] + (["rbind"] if self.recursive else [])
        return f"{self.source}\t{self.destination}\t{','.join(opts)}"


@dataclass(frozen=True)
class Rlimit:
    """A resource limit (`rlimit` record); `name` as in RLIMIT_<name>, e.g. "NOFILE"."""

    name: str
    soft: int
    hard: int

    def encode(self) -> str:
        if self.name not in RLIMIT_NAMES:
            raise ValueError(f"unknown rlimit {self.name!r}: use one of {', '.join(sorted(RLIMIT_NAMES))}")
        if not 0 <= self.soft <= self.hard:
            raise ValueError(f"rlimit {self.name}: need 0 <= soft ({self.soft}) <= hard ({self.hard})")
        return f"{self.name}:{self.soft}:{self.hard}"


@dataclass
class ShimConfig:
    """Everything the shim needs to start one container process (or exec): see the key table in
    docs/architecture.md. `caps=None` keeps every capability; pass DEFAULT_CAPS for Docker's set."""

    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str | None = None
    user: str | None = None
    hostname: str | None = None
    lowerdir: list[str] = field(default_factory=list)
    upperdir: str | None = None
    workdir: str | None = None
    rootfs: str | None = None
    readonly: bool = False
    namespaces: list[str] = field(default_factory=lambda: list(ALL_NAMESPACES))
    netns: str | None = None
    cgroups: list[str] = field(default_factory=list)
    mounts: list[BindMount] = field(default_factory=list)
    masked: list[str] = field(default_factory=lambda: list(DEFAULT_MASKED_PATHS))
    readonly_paths: list[str] = field(default_factory=lambda: list(DEFAULT_READONLY_PATHS))
    rlimits: list[Rlimit] = field(default_factory=list)
    caps: list[int] | None = field(default_factory=lambda: list(DEFAULT_CAPS))
    no_new_privs: bool = True
    tty: bool = False
    stdin: bool = False
    wait_attach: bool = False
    log: str | None = None
    pid: int | None = None
    oom_score_adj: int | None = None
    init: bool = False  # `--init`: the container's pid 1 forwards signals to the command and reaps

    @classmethod
    def for_exec(cls, pid: int, args: list[str], **kw: object) -> ShimConfig:
        """The conf of an exec: no container set-up of its own, it joins everything of `pid`."""
        return cls(args=args, pid=pid, namespaces=[], masked=[], readonly_paths=[], **kw)  # type: ignore[arg-type]

    def records(self) -> list[tuple[str, str]]:
        """The (key, value) records in file order; raises ValueError naming the bad field."""
        if not self.args:
            raise ValueError("args: a container needs a command (at least one argument)")
        if self.pid is None:  # a container (an exec joins the namespaces of `pid` instead)
            if "mnt" not in self.namespaces or not self.rootfs:
                raise ValueError("rootfs: a container needs the mnt namespace and a rootfs")
            if self.netns and "net" in self.namespaces:
                raise ValueError("netns: joining a network namespace excludes 'net' from namespaces")
            if self.hostname and "uts" not in self.namespaces:
                raise ValueError("hostname: needs the uts namespace (it would rename the host)")
        elif self.init:
            raise ValueError("init: an exec runs under the container's init, it cannot have one of its own")
        if self.upperdir and not self.workdir:
            raise ValueError("workdir: an overlay upperdir needs a workdir on the same filesystem")
        for ns in self.namespaces:
            if ns not in ALL_NAMESPACES:
                raise ValueError(f"namespaces: unknown {ns!r}, use {','.join(ALL_NAMESPACES)}")
        for e in self.env:
            if "=" not in e or e.startswith("="):
                raise ValueError(f"env: {e!r} is not NAME=value")
        for cap in self.caps or ():
            if not 0 <= cap <= 63:
                raise ValueError(f"caps: {cap} is not a capability number (0-63)")
        if self.lowerdir and any(":" in d or "," in d for d in self.lowerdir):
            raise ValueError("lowerdir: layer paths must not contain ':' or ','")
        recs: list[tuple[str, str]] = [("arg", a) for a in self.args]
        recs += [("env", e) for e in self.env]
        for key in ("cwd", "user", "hostname", "upperdir", "workdir", "rootfs", "netns", "log"):
            value = getattr(self, key)
            if value is not None:
                recs.append((key, value))
        if self.lowerdir:
            recs.append(("lowerdir", ":".join(self.lowerdir)))
        recs.append(("namespaces", ",".join(self.namespaces)))
        recs += [("cgroup", c) for c in self.cgroups]
        recs += [("mount", m.encode()) for m in self.mounts]
        recs += [("masked", p) for p in self.masked]
        recs += [("readonly_path", p) for p in self.readonly_paths]
        recs += [("rlimit", r.encode()) for r in self.rlimits]
        if self.caps is not None:
            recs.append(("caps", ",".join(str(c) for c in sorted(set(self.caps)))))
        for key, flag in (("readonly", self.readonly), ("no_new_privs", self.no_new_privs), ("tty", self.tty),
                          ("stdin", self.stdin), ("wait_attach", self.wait_attach), ("init", self.init)):
            if flag:
                recs.append((key, "1"))
        if self.pid is not None:
            recs.append(("pid", str(self.pid)))
        if self.oom_score_adj is not None:
            if not -1000 <= self.oom_score_adj <= 1000:
                raise ValueError(f"oom_score_adj: {self.oom_score_adj} is outside -1000..1000")
            recs.append(("oom_score_adj", str(self.oom_score_adj)))
        for key, value in recs:
            if "\0" in value:
                raise ValueError(f"{key}: value {value[:40]!r} contains a NUL byte")
        return recs

    def encode(self) -> bytes:
        """The file's bytes: `key=value` records, each terminated by NUL."""
        return b"".join(f"{k}={v}".encode() + b"\0" for k, v in self.records())

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file, rename) so the shim never reads half a config.

        No fsync: the shim reads the file from the page cache right away, and after a power
        loss no container is running, so the conf is rewritten by the next start or exec.
        """
        data = self.encode()
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)


@dataclass(frozen=True)
class ExitStatus:
    """What the shim wrote into the exit file."""

    code: int
    signal: int
    finished: str


def read_exit(path: str | os.PathLike[str]) -> ExitStatus:
    """Parse an exit file (`code=`, `signal=`, `finished=` lines); FileNotFoundError while running."""
    fields = dict(line.split("=", 1) for line in Path(path).read_text().splitlines() if "=" in line)
    try:
        return ExitStatus(int(fields["code"]), int(fields["signal"]), fields["finished"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: malformed exit file ({e})") from None


@dataclass
class ShimProcess:
    """A started container (or exec) process and the shim that supervises it."""

    shim_pid: int
    pid: int
    exit_path: Path
    attach: socket.socket | None = None

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Block until the shim has exited (it writes the exit file first) and return the status."""
        try:
            pidfd = os.pidfd_open(self.shim_pid)
        except ProcessLookupError:
            pidfd = None
        if pidfd is not None:
            try:
                poller = select.poll()  # not select(): an agent with many containers has fds above 1024
                poller.register(pidfd, select.POLLIN)
                if not poller.poll(None if timeout is None else timeout * 1000):
                    raise TimeoutError(f"shim {self.shim_pid} still running after {timeout}s")
            finally:
                os.close(pidfd)
        try:
            return read_exit(self.exit_path)
        except FileNotFoundError:
            raise ShimError(255, f"shim {self.shim_pid} died without writing {self.exit_path}") from None


def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    """One attach frame: type byte, 3 zero bytes, big-endian u32 length, payload."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_FRAME}: split it")
    return _HEADER.pack(kind, len(payload)) + payload


def resize_payload(rows: int, cols: int) -> bytes:
    """Payload of a RESIZE frame."""
    return struct.pack(">HH", rows, cols)


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get complete (type, payload) frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        frames = []
        while len(self._buf) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self._buf)
            if len(self._buf) < _HEADER.size + length:
                break
            frames.append((kind, bytes(self._buf[_HEADER.size:_HEADER.size + length])))
            del self._buf[:_HEADER.size + length]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return len(self._buf)


def collect(sock: socket.socket) -> tuple[bytes, bytes, int | None]:
    """Read frames until the exit frame (or the shim closes): (stdout, stderr, exit code or None)."""
    out, err, decoder = bytearray(), bytearray(), FrameDecoder()
    while True:
        data = sock.recv(65536)
        if not data:
            return bytes(out), bytes(err), None
        for kind, payload in decoder.feed(data):
            if kind == STDOUT:
                out += payload
            elif kind == STDERR:
                err += payload
            elif kind == EXIT:
                return bytes(out), bytes(err), int(payload)


def connect_attach(path: str | os.PathLike[str]) -> socket.socket:
    """Connect to an attach socket; paths longer than sun_path go through /proc/self/fd."""
    path = os.fspath(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        if len(os.fsencode(path)) < 108:
            sock.connect(path)
        else:
            dirfd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
            try:
                sock.connect(f"/proc/self/fd/{dirfd}/{os.path.basename(path)}")
            finally:
                os.close(dirfd)
    except OSError:
        sock.close()
        raise
    return sock


_devnull: int | None = None


def _high_fd(fd: int) -> int:
    """Move fd above 3 so that dup2 onto 0-3 in the child always clears close-on-exec."""
    if fd > 3:
        return fd
    import fcntl

    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 4)
    os.close(fd)
    return new


def _spawn(argv: list[str]) -> int:
    """Start the shim with /dev/null on 0-2 and a report pipe on 3; return the pipe's read end."""
    global _devnull
    if _devnull is None:
        _devnull = _high_fd(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
    if not SHIM_PATH.exists():
        raise ShimError(125, f"{SHIM_PATH} is missing: run `make native`")
    r, w = os.pipe()
    w = _high_fd(w)
    try:
        pid = os.posix_spawn(str(SHIM_PATH), argv, {}, file_actions=[
            (os.POSIX_SPAWN_DUP2, _devnull, 0), (os.POSIX_SPAWN_DUP2, _devnull, 1),
            (os.POSIX_SPAWN_DUP2, _devnull, 2), (os.POSIX_SPAWN_DUP2, w, 3),
        ])
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    try:
        os.waitpid(pid, 0)  # the intermediate exits right after forking the real shim
    except ChildProcessError:
        pass  # a process-wide SIGCHLD reaper got it first: nothing is left to reap
    return r


class _Report:
    """Line reader over the report pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def line(self) -> str:
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise ShimError(125, "the shim exited without reporting (see its exit file)")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")


def _pids(line: str, rest: str) -> tuple[int, int]:
    try:
        pid, shim_pid = (int(x) for x in rest.split())
    except ValueError:
        raise ShimError(125, f"unexpected report from the shim: {line!r}") from None
    return pid, shim_pid


def _start(argv: list[str], exit_path: Path, sock_path: Path, attach: bool,
           on_started: Callable[[int, int], None] | None = None) -> ShimProcess:
    report = _Report(_spawn(argv))
    sock = None
    try:
        while True:
            line = report.line()
            kind, _, rest = line.partition(" ")
            if line == "ready":
                sock = connect_attach(sock_path)
            elif kind == "started":
                if on_started is not None:
                    on_started(*_pids(line, rest))
            elif kind == "error":
                code, _, message = rest.partition(" ")
                raise ShimError(int(code), message)
            elif kind == "ok":
                break
            else:
                raise ShimError(125, f"unexpected report from the shim: {line!r}")
        pid, shim_pid = _pids(line, rest)
        if attach and sock is None:
            sock = connect_attach(sock_path)
        return ShimProcess(shim_pid=shim_pid, pid=pid, exit_path=exit_path, attach=sock)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    finally:
        os.close(report.fd)


def run(bundle: str | os.PathLike[str], wait_attach: bool = False,
        on_started: Callable[[int, int], None] | None = None) -> ShimProcess:
    """Start the container described by `<bundle>/shim.conf`.

    With `wait_attach` (and `wait_attach=1` in the conf) the returned process has a connected
    attach socket that was there before the process started, so no output is missed; without
    it, `attach` is None and `connect_attach(bundle/"attach.sock")` can attach later.

    `on_started(pid, shim_pid)` is called as soon as the container process exists, while it still
    sets itself up (mounts, identity, exec): work done there (the runtime's durable record) costs
    no time of its own. If the start then fails, `run` raises as usual. An exception from the
    callback propagates; the container may then still start (the caller cleans up by cgroup).
    """
    bundle = Path(bundle)
    return _start([str(SHIM_PATH), "run", str(bundle)], bundle / "exit", bundle / "attach.sock", wait_attach,
                  on_started)


def exec(bundle: str | os.PathLike[str], exec_id: str, wait_attach: bool = False) -> ShimProcess:  # noqa: A001
    """Start the process of `<bundle>/exec/<exec_id>.conf` inside the running container."""
    if not exec_id or "/" in exec_id or exec_id in (".", ".."):
        raise ValueError(f"exec id {exec_id!r}: use a name without '/'")
    bundle = Path(bundle)
    return _start([str(SHIM_PATH), "exec", str(bundle), exec_id], bundle / "exec" / f"{exec_id}.exit",
                  bundle / "exec" / f"{exec_id}.sock", wait_attach)


__all__ = [
    "SHIM_PATH", "DEFAULT_CAPS", "DEFAULT_MASKED_PATHS", "DEFAULT_READONLY_PATHS", "ALL_NAMESPACES",
    "STDIN", "STDOUT", "STDERR", "EXIT", "STDIN_CLOSE", "RESIZE", "ShimError", "BindMount", "Rlimit",
    "ShimConfig", "ExitStatus", "ShimProcess", "read_exit", "encode_frame", "resize_payload", "FrameDecoder",
    "collect", "connect_attach", "run", "exec",
]
