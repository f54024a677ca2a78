"""`make run` / `make stop`: start `swarmd all-in-one` in the background and show it working.

`make run` starts the single-machine cluster (etcd, manager and agent; log and pid file in the
state root), waits until the agent's socket answers a health check, imports a busybox image
built from /bin/busybox, runs a demo container, creates the service `web` (3 replicas of
busybox `httpd -f -p 8080`; tasks run without a network until bridge networks land, httpd
still runs), waits until its tasks run, shows `swarmctl service ps web` and prints what to
try next. Running it again finds everything already up. `--stop` stops all-in-one; task
containers keep running and are adopted when it starts again.
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
CONTROL_SOCKET = "/run/flotilla/control.sock"
IMAGE = "busybox:latest"
SERVICE, REPLICAS = "web", 3


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


def start_agent(root: Path, socket: str, cgroup_parent: str, control: str, remote: str, timeout: float = 60.0) -> int:
    """Start `swarmd all-in-one` detached from this terminal; returns its pid once the agent answers."""
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "swarmd.log", "ab")
    swarmd = Path(sys.executable).with_name("swarmd")
    proc = subprocess.Popen([str(swarmd), "all-in-one", "--root", str(root), "--listen-local", f"unix://{socket}",
                             "--cgroup-parent", cgroup_parent, "--listen-control", f"unix://{control}",
                             "--listen-remote", remote],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    (root / "swarmd.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"swarmd all-in-one exited with status {proc.returncode}; see {root / 'swarmd.log'}")
        if agent_answers(socket):
            return proc.pid
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"the agent did not answer on {socket} within {timeout:.0f}s; see {root / 'swarmd.log'}")


def running_pid(root: Path) -> int | None:
    try:
        pid = int((root / "swarmd.pid").read_text())
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


def run(root: Path, socket: str, cgroup_parent: str, control: str = CONTROL_SOCKET, remote: str = "127.0.0.1:2377") -> int:
    pid = running_pid(root)
    if pid is None or not agent_answers(socket):
        pid = start_agent(root, socket, cgroup_parent, control, remote)
        print(f"etcd, manager and agent started (swarmd all-in-one, pid {pid}), state in {root}, log {root / 'swarmd.log'}")
    else:
        print(f"etcd, manager and agent already running (swarmd all-in-one, pid {pid})")
    ensure_image(socket)
    demo = swarmctl("run", "--rm", IMAGE, "sh", "-c", "echo hello from a Flotilla container: $(hostname), pid $$",
                    socket=socket, check=False)
    print(demo.stdout, end="")
    if demo.returncode != 0:
        print(demo.stderr, end="", file=sys.stderr)
        return demo.returncode
    status = run_service(control)
    if status:
        return status
    host = "" if socket == DEFAULT_SOCKET else f" -H unix://{socket}"
    mgr = "" if control == CONTROL_SOCKET else f" -m unix://{control}"
    print(f"""
Try next:
  swarmctl service scale{mgr} {SERVICE}=5; swarmctl service ps{mgr} {SERVICE}    # the cluster's service
  swarmctl service logs{mgr} -f {SERVICE}; swarmctl node ls{mgr}; swarmctl service rm{mgr} {SERVICE}
  swarmctl{host} ps                                  # this node's containers, the tasks among them
  swarmctl{host} run -it --rm {IMAGE} sh              # an interactive shell
  swarmctl{host} run -d --name demo --restart always {IMAGE} httpd -f -p 8080
  swarmctl{host} logs -f demo; swarmctl{host} exec -it demo sh; swarmctl{host} stats --no-stream
  swarmctl{host} stop demo; swarmctl{host} rm demo
  make stop                                          # stop etcd, manager and agent (containers keep running)""")
    return 0


def cluster_ctl(*args: str, control: str, check: bool = True) -> subprocess.CompletedProcess:
    """swarmctl's cluster commands against the manager's control socket."""
    exe = Path(sys.executable).with_name("swarmctl")
    return subprocess.run([str(exe), *args[:2], "-m", f"unix://{control}", *args[2:]], check=check, text=True,
                          capture_output=True)


def running_tasks(service: str, control: str) -> int:
    """Tasks of `service` that run and are meant to, from the manager's Control API."""
    import grpc
    from flotilla.proto import control_pb2 as cpb, control_pb2_grpc as cgrpc, objects_pb2 as pb

    with grpc.insecure_channel(f"unix://{control}") as channel:
        control = cgrpc.ControlStub(channel)
        svc = control.GetService(cpb.GetServiceRequest(service_id=service), timeout=5).service
        tasks = control.ListTasks(cpb.ListTasksRequest(service_ids=[svc.id]), timeout=5).tasks
    return sum(1 for t in tasks if t.status.state == pb.RUNNING and t.desired_state == pb.RUNNING)


def run_service(control: str, timeout: float = 60.0) -> int:
    """Create the demo service (once), wait until its replicas run, show them."""
    if cluster_ctl("service", "inspect", SERVICE, control=control, check=False).returncode != 0:
        created = cluster_ctl("service", "create", "--name", SERVICE, "--replicas", str(REPLICAS), IMAGE,
                              "httpd", "-f", "-p", "8080", control=control, check=False)
        if created.returncode != 0:
            print(created.stderr, end="", file=sys.stderr)
            return created.returncode
        print(f"service {SERVICE} created: {REPLICAS} replicas of busybox httpd")
    deadline = time.monotonic() + timeout
    while running_tasks(SERVICE, control) < REPLICAS:
        if time.monotonic() > deadline:
            print(f"the tasks of {SERVICE} did not all run within {timeout:.0f}s", file=sys.stderr)
            break
        time.sleep(0.2)
    print(f"\n$ swarmctl service ps {SERVICE}")
    print(cluster_ctl("service", "ps", SERVICE, control=control, check=False).stdout, end="")
    return 0


def stop(root: Path, timeout: float = 30.0) -> int:
    pid = running_pid(root)
    if pid is None:
        print("swarmd all-in-one is not running")
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
        print(f"swarmd all-in-one (pid {pid}) did not stop within {timeout:.0f}s", file=sys.stderr)
        return 1
    (root / "swarmd.pid").unlink(missing_ok=True)
    print(f"etcd, manager and agent stopped (swarmd all-in-one, pid {pid}); task containers keep running "
          "and are adopted by `make run`")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/var/lib/flotilla")
    parser.add_argument("--socket", default=DEFAULT_SOCKET)
    parser.add_argument("--cgroup-parent", default="flotilla")
    parser.add_argument("--control-socket", default=CONTROL_SOCKET, help="the manager's Control API socket")
    parser.add_argument("--listen-remote", default="127.0.0.1:2377", help="the manager's address for agents")
    parser.add_argument("--stop", action="store_true", help="stop the swarmd all-in-one started by `make run`")
    args = parser.parse_args(argv)
    root = Path(args.root)
    return stop(root) if args.stop else run(root, args.socket, args.cgroup_parent, args.control_socket, args.listen_remote)


if __name__ == "__main__":
    sys.exit(main())
