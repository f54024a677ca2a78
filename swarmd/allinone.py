"""`swarmd all-in-one`: a whole single-machine cluster — an embedded etcd, a manager, an agent.

Each part runs as its own child process (etcd is a Go binary anyway; the manager and the agent
are the same `swarmd manager` / `swarmd agent` a multi-host cluster runs), so one part's crash
is contained and each part's memory can be measured. The children get PR_SET_PDEATHSIG, so
even a `kill -9` of all-in-one takes them down; a SIGTERM or SIGINT stops them in reverse
order of start (agent, manager, etcd), each with a grace period. Task containers outlive the
agent (their shims are separate) and are adopted by the next start: the cluster's state is in
etcd under the root, the containers' state in the runtime's files, and both survive.

etcd's data lives in `<root>/etcd`; its two loopback ports are picked free on first start and
kept in `<root>/etcd/ports.json`, so a restart finds the member where it was.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..runtime.children import dying_with_parent
from .agent_cmd import add_cluster_flags

log = logging.getLogger("flotilla.allinone")
START_TIMEOUT = 30.0
STOP_GRACE = 15.0


class StartError(Exception):
    """A part did not come up; the message says which and where its log is."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("all-in-one", help="run etcd, a manager and an agent on this machine")
    p.add_argument("--root", default="/var/lib/flotilla", help="state root of all parts (default %(default)s)")
    p.add_argument("--listen-control", default="unix:///run/flotilla/control.sock",
                   help="the manager's Control API socket (default %(default)s)")
    p.add_argument("--listen-remote", default="127.0.0.1:2377",
                   help="the manager's address for agents and remote clients (default %(default)s)")
    p.add_argument("--listen-local", default="unix:///run/flotilla/agent.sock",
                   help="the agent's local API socket (default %(default)s)")
    p.add_argument("--metrics-addr", default=None, help="the manager's Prometheus endpoint, HOST:PORT")
    p.add_argument("--agent-metrics-addr", default=None, help="the agent's Prometheus endpoint, HOST:PORT")
    p.add_argument("--cgroup-parent", default="flotilla", help="parent cgroup of containers (default %(default)s)")
    p.add_argument("--heartbeat-period", default=None, help="agents' heartbeat period, e.g. 5s (manager default)")
    p.add_argument("--etcd-endpoints", default=None,
                   help="use this etcd instead of starting one (URL[,URL...])")
    add_cluster_flags(p)
    p.set_defaults(func=run)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Part:
    """One child process with its log file under the root."""

    def __init__(self, name: str, argv: list[str], logfile: Path) -> None:
        self.name = name
        self.logfile = logfile
        with open(logfile, "ab") as out:
            # SIGTERM when all-in-one dies, however it dies
            self.proc = subprocess.Popen(dying_with_parent(argv, "TERM"), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        log.info("%s started (pid %d), log %s", name, self.proc.pid, logfile)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs: killing it", self.name, STOP_GRACE)
            self.proc.kill()
            self.proc.wait()
        log.info("%s stopped", self.name)

    def wait_until(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if not self.alive():
                raise StartError(f"{self.name} exited with status {self.proc.returncode}; see {self.logfile}")
            if time.monotonic() > deadline:
                raise StartError(f"{self.name} did not {what} within {START_TIMEOUT:.0f}s; see {self.logfile}")
            time.sleep(0.1)


def etcd_ports(data: Path) -> tuple[int, int]:
    """The member's client and peer ports: the ones it had before, else two free ones."""
    saved = data / "ports.json"
    try:
        ports = json.loads(saved.read_text())
        client, peer = int(ports["client"]), int(ports["peer"])
        if port_free(client) and port_free(peer):
            return client, peer
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
    client, peer = free_port(), free_port()
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(json.dumps({"client": client, "peer": peer}))
    os.rename(tmp, saved)
    return client, peer


def etcd_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
            return json.loads(resp.read()).get("health") == "true"
    except (OSError, ValueError):
        return False


def grpc_serving(target: str) -> bool:
    """The gRPC health service at `target` says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if target.startswith("unix://") and not os.path.exists(target[len("unix://"):]):
        return False
    with grpc.insecure_channel(target) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING


def start_parts(args: argparse.Namespace, root: Path) -> list[Part]:
    swarmd = str(Path(sys.executable).with_name("swarmd"))
    parts: list[Part] = []
    try:
        endpoints = args.etcd_endpoints
        if not endpoints:
            data = root / "etcd"
            data.mkdir(parents=True, exist_ok=True, mode=0o700)
            client, peer = etcd_ports(data)
            endpoints = f"http://127.0.0.1:{client}"
            etcd = Part("etcd", [
                "etcd", "--name", "flotilla", "--data-dir", str(data / "member-data"),
                "--listen-client-urls", endpoints, "--advertise-client-urls", endpoints,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"flotilla=http://127.0.0.1:{peer}",
                "--listen-metrics-urls", "", "--log-level", "warn",
            ], root / "etcd.log")
            parts.append(etcd)
            etcd.wait_until(lambda: etcd_healthy(endpoints), "answer on " + endpoints)
        manager_argv = [swarmd, "manager", "--etcd-endpoints", endpoints, "--listen-control", args.listen_control,
                        "--listen-remote", args.listen_remote]
        if args.metrics_addr:
            manager_argv += ["--metrics-addr", args.metrics_addr]
        if args.heartbeat_period:
            manager_argv += ["--heartbeat-period", args.heartbeat_period]
        manager = Part("manager", manager_argv, root / "manager.log")
        parts.append(manager)
        manager.wait_until(lambda: grpc_serving(args.listen_control), "answer on " + args.listen_control)
        managers = ",".join(args.manager or [args.listen_remote])
        agent_argv = [swarmd, "agent", "--root", str(root), "--listen-local", args.listen_local,
                      "--cgroup-parent", args.cgroup_parent, "--manager", managers]
        if args.agent_metrics_addr:
            agent_argv += ["--metrics-addr", args.agent_metrics_addr]
        if args.hostname:
            agent_argv += ["--hostname", args.hostname]
        for label in args.label:
            agent_argv += ["--label", label]
        agent = Part("agent", agent_argv, root / "agent.log")
        parts.append(agent)
        agent.wait_until(lambda: grpc_serving(args.listen_local), "answer on " + args.listen_local)
    except BaseException:
        stop_parts(parts)
        raise
    return parts


def stop_parts(parts: list[Part]) -> None:
    """Reverse order: the agent first (containers keep running), etcd last."""
    for part in reversed(parts):
        part.stop()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    try:
        parts = start_parts(args, root)
    except StartError as exc:
        log.error("%s", exc)
        return 1
    log.info("all-in-one is up: swarmctl talks to %s (cluster) and %s (this node)",
             args.listen_control, args.listen_local)
    status = 0
    while not stopping:
        dead = [p for p in parts if not p.alive()]
        if dead:
            log.error("%s exited with status %s; stopping the rest (see %s)", dead[0].name,
                      dead[0].proc.returncode, dead[0].logfile)
            status = 1
            break
        time.sleep(0.2)
    stop_parts(parts)
    return status
