"""Helpers of the manager integration tests: an in-process Manager, an etcd dump, waiting."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
from aetcd import rpc

from flotilla.manager.manager import Manager, ManagerConfig
from flotilla.manager.store.keys import prefix_end
from flotilla.proto import control_pb2_grpc as cgrpc
from flotilla.proto import dispatcher_pb2_grpc as dgrpc

from etcd_server import free_port

SWARMD = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "swarmd"


@contextlib.asynccontextmanager
async def running_manager(endpoint: str, tmp: Path, unique: str, **kw):
    """A Manager on `endpoint`, serving on a free loopback port and a unix socket in `tmp`;
    yields (manager, control stub, dispatcher stub) once it leads (the default cluster exists)."""
    config = ManagerConfig(etcd_endpoints=[endpoint], listen_remote=f"127.0.0.1:{free_port()}",
                           listen_control=f"unix://{tmp}/control-{unique}.sock", manager_id=f"m-{unique}",
                           leader_ttl=kw.pop("leader_ttl", 2), **kw)
    manager = Manager(config)
    await manager.start()
    channel = grpc.aio.insecure_channel(config.listen_remote)
    try:
        await wait_until(lambda: manager.store.list("cluster"), "the default cluster")
        yield manager, cgrpc.ControlStub(channel), dgrpc.DispatcherStub(channel)
    finally:
        await channel.close()
        await manager.stop()


async def etcd_dump(endpoint: str, prefix: bytes = b"/flotilla/") -> dict[bytes, tuple[bytes, int]]:
    """Every key under `prefix` with its value and mod revision."""
    async with grpc.aio.insecure_channel(endpoint.removeprefix("http://")) as ch:
        resp = await rpc.KVStub(ch).Range(rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix)))
    return {kv.key: (kv.value, kv.mod_revision) for kv in resp.kvs}


async def wait_until(check, what: str, timeout: float = 15.0):
    """Poll `check` (sync or async) until truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class ManagerProc:
    """One `swarmd manager` child process on fixed addresses (so it can be restarted on them)."""

    def __init__(self, endpoint: str, tmp: Path, name: str, ttl: int = 2) -> None:
        self.endpoint, self.name, self.ttl = endpoint, name, ttl
        self.remote = f"127.0.0.1:{free_port()}"
        self.metrics = f"127.0.0.1:{free_port()}"
        self.socket = tmp / f"{name}.sock"
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(SWARMD), "manager", "--etcd-endpoints", self.endpoint, "--listen-control", f"unix://{self.socket}",
                 "--listen-remote", self.remote, "--metrics-addr", self.metrics, "--heartbeat-period", "200ms", "--leader-ttl", f"{self.ttl}s"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def leaked_processes(unique: str) -> list[str]:
    """Command lines of processes that mention this test's unique suffix (should be none),
    apart from the test's etcd, which its fixture stops after the test."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if unique in cmd and not cmd.split(" ", 1)[0].endswith("/etcd"):
                found.append(cmd)
    return found
