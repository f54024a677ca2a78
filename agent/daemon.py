"""`swarmd agent`: open the runtime, adopt what still runs, serve the local API until a signal.

Start-up order matters for crash safety: the state-root lock first (two agents on one root
would fight over every container), then `runtime.recover()` (exited containers marked, live
shims adopted), then the monitor (so restart policies are enforced before any request can
race it), and only then the socket.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flotilla.proto import runtime_pb2, runtime_pb2_grpc
from flotilla.proto.framing import cli_socket_path
from flotilla.runtime.errors import RuntimeFault
from flotilla.runtime.runtime import Runtime

from .cli_listener import CliListener
from .images_api import recover_images
from .monitor import Monitor
from .server import RuntimeService

log = logging.getLogger("flotilla.agent")
SERVICE = runtime_pb2.DESCRIPTOR.services_by_name["Runtime"].full_name


class AgentError(Exception):
    """A start-up problem the operator must fix; printed as one line."""


def socket_path(listen: str) -> Path:
    if not listen.startswith("unix://"):
        raise AgentError(f"invalid --listen-local {listen!r}: expected unix:///path/to/agent.sock")
    return Path(listen[len("unix://"):])


def lock_root(root: Path) -> int:
    """Hold an exclusive lock on the state root for the agent's lifetime (released by the kernel on death)."""
    (root / "agent").mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "agent" / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AgentError(f"another agent is using the state root {root}") from None
    return fd


def claim_socket(path: Path) -> None:
    """Remove a stale socket left by a killed agent; refuse if a live one answers on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise AgentError(f"another process is listening on {path}")


async def serve(root: Path, listen: str, cgroup_parent: str, metrics_addr: str | None,
                cluster: dict | None = None, default_subnet: str = "10.88.0.0/16",
                insecure_registries: list[str] | None = None) -> None:
    path = socket_path(listen)
    root.mkdir(parents=True, exist_ok=True)
    lock_fd = lock_root(root)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="runtime"))
    runtime = Runtime(root, cgroup_parent=cgroup_parent, default_subnet=default_subnet)
    adopted = await asyncio.to_thread(runtime.recover)  # also the networks: bridges, rules, DNS listeners
    images = runtime.image_service(insecure_registries=insecure_registries)
    await asyncio.to_thread(recover_images, images, root / "agent" / "tmp")  # what a killed pull/build left
    log.info("adopted %d running container(s)", len(adopted))
    monitor = Monitor(runtime, root / "agent")
    await monitor.start(adopted)
    agent = None
    if cluster:  # `--manager`: run the cluster's tasks too (flotilla.agent.session)
        from .session import ClusterAgent
        agent = ClusterAgent(runtime, root / "agent", images=images, **cluster)
        await agent.start()
    metrics = None
    if metrics_addr:
        from .metrics import serve_metrics
        try:
            metrics = serve_metrics(runtime, metrics_addr, agent)
        except (ValueError, OSError) as exc:
            raise AgentError(str(exc)) from None

    service = RuntimeService(runtime, monitor, root / "agent" / "tmp", images)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 << 20)])
    runtime_pb2_grpc.add_RuntimeServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    claim_socket(path)
    cli_path = Path(cli_socket_path(str(path)))
    claim_socket(cli_path)
    if not server.add_insecure_port(f"unix:{path}"):
        raise AgentError(f"cannot listen on {path}")
    await server.start()
    os.chmod(path, 0o660)
    # the same servicer without HTTP/2, for swarmctl (agent/cli_listener.py); it appears once ready
    cli = CliListener(service, runtime_pb2.DESCRIPTOR.services_by_name["Runtime"], runtime_pb2, cli_path)
    try:
        await cli.start()
    except OSError as exc:
        raise AgentError(f"cannot listen on {cli_path}: {exc.strerror}") from None
    await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("serving the runtime API on unix://%s (root %s, cgroup parent %s)", path, root, cgroup_parent)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping; containers keep running and are adopted by the next agent")
    await health_servicer.enter_graceful_shutdown()
    await asyncio.gather(cli.close(2), server.stop(2))
    if agent is not None:
        await agent.close()
    monitor.close()
    runtime.close()  # the DNS server stops with the agent (containers keep their networking)
    if metrics is not None:
        metrics.shutdown()
    path.unlink(missing_ok=True)
    os.close(lock_fd)


def run(root: str, listen: str, cgroup_parent: str, metrics_addr: str | None, cluster: dict | None = None,
        default_subnet: str = "10.88.0.0/16", insecure_registries: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(Path(root), listen, cgroup_parent, metrics_addr, cluster, default_subnet,
                          insecure_registries))
    except (AgentError, RuntimeFault) as exc:
        log.error("%s", exc)
        return 1
    return 0
