"""`make run` / `make stop`: start `swarmd agent` in the background and show it working.

`make run` starts the agent (log and pid file in the state root), waits until its socket
answers a health check, imports a busybox image built from /bin/busybox, runs a demo
container and prints what to try next. Running it again finds the agent already up.
`--stop` stops the agent; containers keep running and are adopted when it starts again.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SOCKET = "/run/flotilla/agent.sock"
IMAGE = "busybox:latest"


def swarmctl(*args: str, socket: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("swarmctl")
    return subprocess.run([str(exe), "-H", f"unix://{socket}", *args], check=check, text=True, capture_output=True)


def agent_answers(socket: str) -> bool:
    """True when the agent's health service says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if not os.path.exists(socket):
        return False
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING


def start_agent(root: Path, socket: str, cgroup_parent: str, timeout: float = 30.0) -> int:
    """Start `swarmd agent` detached from this terminal; returns its pid once it answers."""
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "agent.log", "ab")
    swarmd = Path(sys.executable).with_name("swarmd")
    proc = subprocess.Popen([str(swarmd), "agent", "--root", str(root), "--listen-local", f"unix://{socket}",
                             "--cgroup-parent", cgroup_parent],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    (root / "agent.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the agent exited with status {proc.returncode}; see {root / 'agent.log'}")
        if agent_answers(socket):
            return proc.pid
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"the agent did not answer on {socket} within {timeout:.0f}s; see {root / 'agent.log'}")


def running_pid(root: Path) -> int | None:
    try:
        pid = int((root / "agent.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def ensure_image(socket: str) -> None:
    if swarmctl("inspect", IMAGE, socket=socket, check=False).returncode == 0:
        return
    from .busybox_image import write_busybox_tar

    with tempfile.TemporaryDirectory() as tmp:
        tar = write_busybox_tar(Path(tmp) / "busybox.tar")
        swarmctl("image", "import", "-c", 'CMD ["sh"]', str(tar), IMAGE, socket=socket)


def run(root: Path, socket: str, cgroup_parent: str) -> int:
    pid = running_pid(root)
    if pid is None or not agent_answers(socket):
        pid = start_agent(root, socket, cgroup_parent)
        print(f"agent started (pid {pid}), state in {root}, log {root / 'agent.log'}")
    else:
        print(f"agent already running (pid {pid})")
    ensure_image(socket)
    demo = swarmctl("run", "--rm", IMAGE, "sh", "-c", "echo hello from a Flotilla container: $(hostname), pid $$",
                    socket=socket, check=False)
    print(demo.stdout, end="")
    if demo.returncode != 0:
        print(demo.stderr, end="", file=sys.stderr)
        return demo.returncode
    host = "" if socket == DEFAULT_SOCKET else f" -H unix://{socket}"
    print(f"""
Try next:
  swarmctl{host} run -it --rm {IMAGE} sh              # an interactive shell
  swarmctl{host} run -d --name web --restart always {IMAGE} httpd -f -p 8080
  swarmctl{host} ps; swarmctl{host} logs -f web; swarmctl{host} exec -it web sh
  swarmctl{host} stats --no-stream; swarmctl{host} stop web; swarmctl{host} rm web
  make stop                                                   # stop the agent (containers keep running)""")
    return 0


def stop(root: Path, timeout: float = 15.0) -> int:
    pid = running_pid(root)
    if pid is None:
        print("the agent is not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        print(f"the agent (pid {pid}) did not stop within {timeout:.0f}s", file=sys.stderr)
        return 1
    (root / "agent.pid").unlink(missing_ok=True)
    print(f"agent stopped (pid {pid}); running containers keep running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/var/lib/flotilla")
    parser.add_argument("--socket", default=DEFAULT_SOCKET)
    parser.add_argument("--cgroup-parent", default="flotilla")
    parser.add_argument("--stop", action="store_true", help="stop the agent started by `make run`")
    args = parser.parse_args(argv)
    root = Path(args.root)
    return stop(root) if args.stop else run(root, args.socket, args.cgroup_parent)


if __name__ == "__main__":
    sys.exit(main())
