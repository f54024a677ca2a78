"""A real cluster on one machine for the cluster e2e tests: a real etcd, one `swarmd manager`
and several `swarmd agent --manager` processes, each agent with its own state root, cgroup
parent `flotilla-test-<unique>-<x>`, local socket and `--hostname`, all with the test's unique
suffix so that parallel runs never collide. Tests drive the Control API and the CLI and read
the agents' containers through their local sockets; `Cluster.close()` removes everything and
`leaks()` lists whatever is left (scoped to this cluster's names)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from flotilla.proto import control_pb2 as cpb
from flotilla.proto import control_pb2_grpc as cgrpc
from flotilla.proto import objects_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
CGROUP_ROOT = Path("/sys/fs/cgroup")
IMAGE = "busybox:latest"
sys.path.insert(0, str(REPO / "tests"))
from cli_harness import Agent  # noqa: E402
from cli_harness import wait_for as _wait_for  # noqa: E402
from etcd_server import EtcdServer, free_port  # noqa: E402


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """The CLI harness's poll, with the slower defaults of a whole cluster."""
    return _wait_for(predicate, timeout, interval, what)


def manager_available() -> bool:
    """`swarmd manager` exists on this branch (manager-core's part)."""
    res = subprocess.run([str(BIN / "swarmd"), "manager", "--help"], capture_output=True)
    return res.returncode == 0


class AgentProc(Agent):
    """One `swarmd agent` joined to the cluster: the CLI tests' agent (start-up, swarmctl, stop,
    kill -9, cgroup clean-up) with `--manager`, `--hostname` and `--label` added."""

    def __init__(self, cluster: "Cluster", letter: str, labels: dict[str, str]) -> None:
        root = cluster.tmp / f"agent-{letter}"
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(root, f"{cluster.unique}-{letter}")  # cgroup parent flotilla-test-<unique>-<letter>
        self.cluster = cluster
        self.hostname = f"node-{letter}-{cluster.unique}"
        self.labels = labels

    def spawn(self) -> None:
        managers = ",".join(filter(None, (self.cluster.remote, self.cluster.backup_remote)))
        self.start_args = ["--manager", managers, "--hostname", self.hostname,
                           *(arg for k, v in self.labels.items() for arg in ("--label", f"{k}={v}"))]
        super().spawn()

    def containers(self, all: bool = True) -> list[dict]:  # noqa: A002 (Docker's flag)
        """The agent's containers as `swarmctl inspect` shows them (retried when one goes away
        between the listing and the inspection, as the agent removes containers by itself)."""
        for _ in range(10):
            ids = self.ctl("ps", "-q", "--no-trunc", *(["-a"] if all else [])).stdout.split()
            if not ids:
                return []
            res = self.ctl("inspect", *ids, check=False)
            if res.returncode == 0:
                return json.loads(res.stdout)
            time.sleep(0.1)
        raise AssertionError(f"containers of {self.hostname} keep changing: {res.stderr}")

    def running(self) -> list[dict]:
        return [c for c in self.containers() if c["State"]["Running"]]

    def leaks(self) -> list[str]:
        found = []
        netns = self.netns_dir()
        with open("/proc/self/mountinfo") as f:
            found += [f"mount: {line.strip()}" for line in f if str(self.root) in line or netns in line]
        for parent in CGROUP_ROOT.glob(f"*/{self.cgroup_parent}"):
            found.append(f"cgroup: {parent}")
        return found


class Cluster:
    """etcd + one manager + agents, all of this test's own."""

    def __init__(self, tmp: Path, unique: str, busybox_tar: Path, heartbeat: float = 0.5) -> None:
        self.tmp, self.unique, self.busybox_tar, self.heartbeat = tmp, unique, busybox_tar, heartbeat
        self.etcd = EtcdServer(tmp / "etcd-data", f"etcd-{unique}")
        self.remote = f"127.0.0.1:{free_port()}"
        self.control_socket = tmp / "control.sock"
        self.manager: subprocess.Popen | None = None
        self.backup: subprocess.Popen | None = None  # a second manager on the same etcd (failover tests)
        self.backup_remote = ""
        self.agents: dict[str, AgentProc] = {}
        self.channel = grpc.insecure_channel(self.remote)
        self.control = cgrpc.ControlStub(self.channel)

    # -- processes -------------------------------------------------------------------
    def start(self) -> None:
        self.etcd.start()
        self.start_manager()

    def start_manager(self) -> None:
        with open(self.tmp / "manager.log", "ab") as log:
            self.manager = subprocess.Popen(
                [str(BIN / "swarmd"), "manager", "--etcd-endpoints", self.etcd.endpoint,
                 "--listen-control", f"unix://{self.control_socket}", "--listen-remote", self.remote,
                 "--metrics-addr", f"127.0.0.1:{free_port()}", "--heartbeat-period", f"{self.heartbeat}s"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

        def ready():
            if self.manager.poll() is not None:
                raise AssertionError(f"manager died:\n{self.manager_log()}")
            try:
                return self.control.ListClusters(cpb.ListClustersRequest(), timeout=1).clusters
            except grpc.RpcError:
                return None
        wait_for(ready, 20, what="the manager")

    def start_backup_manager(self) -> None:
        """A second manager on the same etcd; agents started afterwards know both addresses."""
        self.backup_remote = f"127.0.0.1:{free_port()}"
        with open(self.tmp / "manager-backup.log", "ab") as log:
            self.backup = subprocess.Popen(
                [str(BIN / "swarmd"), "manager", "--etcd-endpoints", self.etcd.endpoint,
                 "--listen-control", f"unix://{self.tmp / 'control-backup.sock'}", "--listen-remote", self.backup_remote,
                 "--heartbeat-period", f"{self.heartbeat}s"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        backup = cgrpc.ControlStub(grpc.insecure_channel(self.backup_remote))

        def ready():
            if self.backup.poll() is not None:
                raise AssertionError("backup manager died")
            try:
                return backup.ListClusters(cpb.ListClustersRequest(), timeout=1).clusters
            except grpc.RpcError:
                return None
        wait_for(ready, 20, what="the backup manager")

    def use_backup(self) -> None:
        """Talk to the backup manager from now on (the first one is gone)."""
        self.channel.close()
        self.channel = grpc.insecure_channel(self.backup_remote)
        self.control = cgrpc.ControlStub(self.channel)

    def manager_log(self) -> str:
        path = self.tmp / "manager.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def add_agents(self, **labels_by_letter: dict[str, str]) -> list[AgentProc]:
        """Start agents side by side (each with the busybox image), e.g. add_agents(a={}, b={"zone": "x"})."""
        agents = [AgentProc(self, letter, labels) for letter, labels in labels_by_letter.items()]
        for agent in agents:
            self.agents[agent.cgroup_parent.rsplit("-", 1)[1]] = agent
            agent.spawn()
        for agent in agents:
            agent.wait_ready()
            agent.ctl("image", "import", str(self.busybox_tar), IMAGE)
        return agents

    def close(self) -> list[str]:
        """Remove every service, wait for the agents to remove their containers, stop everything;
        returns what was left behind."""
        leaks: list[str] = []
        try:
            if any(m is not None and m.poll() is None for m in (self.manager, self.backup)):
                for s in self.control.ListServices(cpb.ListServicesRequest()).services:
                    self.control.RemoveService(cpb.RemoveServiceRequest(service_id=s.id))
                live = [a for a in self.agents.values() if a.proc is not None and a.proc.poll() is None]
                try:
                    wait_for(lambda: not any(a.containers() for a in live), 30, what="agents to remove every container")
                except AssertionError as exc:
                    leaks.append(str(exc))
        finally:
            for agent in self.agents.values():
                if agent.proc is not None and agent.proc.poll() is None:
                    for c in agent.containers():  # whatever a failed test left
                        agent.ctl("rm", "-f", c["Id"], check=False)
                agent.stop()
                agent.remove_cgroup_parents()
                leaks += agent.leaks()
            for manager in (self.manager, self.backup):
                if manager is not None and manager.poll() is None:
                    manager.send_signal(signal.SIGTERM)
                    try:
                        manager.wait(15)
                    except subprocess.TimeoutExpired:
                        manager.kill()
                        manager.wait()
            self.channel.close()
            self.etcd.destroy()
        leaks += leaked_processes(self.unique)
        return leaks

    # -- control API -----------------------------------------------------------------
    def service_spec(self, name: str, args: list[str], replicas: int | None = 1, global_: bool = False,
                     constraints: tuple[str, ...] = (), restart: pb.RestartPolicy | None = None,
                     grace: float = 1.0) -> pb.ServiceSpec:
        spec = pb.ServiceSpec()
        spec.annotations.name = f"{name}-{self.unique}"
        spec.task.container.image = IMAGE
        spec.task.container.args.extend(args)
        spec.task.container.stop_grace_period.FromNanoseconds(int(grace * 1e9))
        spec.task.placement.constraints.extend(constraints)
        if restart is not None:
            spec.task.restart.CopyFrom(restart)
        else:
            spec.task.restart.delay.FromMilliseconds(100)
        if global_:
            getattr(spec, "global").SetInParent()
        else:
            spec.replicated.replicas = replicas or 0
        return spec

    def create(self, name: str, args: list[str], **kw) -> pb.Service:
        return self.control.CreateService(cpb.CreateServiceRequest(spec=self.service_spec(name, args, **kw))).service

    def service(self, ref: str) -> pb.Service:
        return self.control.GetService(cpb.GetServiceRequest(service_id=ref)).service

    def scale(self, service: pb.Service, replicas: int) -> None:
        current = self.service(service.id)
        spec = pb.ServiceSpec()
        spec.CopyFrom(current.spec)
        spec.replicated.replicas = replicas
        self.control.UpdateService(cpb.UpdateServiceRequest(service_id=service.id, service_version=current.meta.version,
                                                            spec=spec))

    def remove(self, service: pb.Service) -> None:
        self.control.RemoveService(cpb.RemoveServiceRequest(service_id=service.id))

    def tasks(self, service: pb.Service | None = None) -> list[pb.Task]:
        req = cpb.ListTasksRequest(service_ids=[service.id] if service else [])
        return list(self.control.ListTasks(req).tasks)

    def nodes(self) -> list[pb.Node]:
        return list(self.control.ListNodes(cpb.ListNodesRequest()).nodes)

    def node(self, agent: AgentProc) -> pb.Node:
        return self.control.GetNode(cpb.GetNodeRequest(node_id=agent.hostname)).node

    def set_availability(self, agent: AgentProc, availability: int) -> None:
        current = self.node(agent)
        spec = pb.NodeSpec()
        spec.CopyFrom(current.spec)
        spec.availability = availability
        self.control.UpdateNode(cpb.UpdateNodeRequest(node_id=current.id, node_version=current.meta.version, spec=spec))

    def wait_nodes_ready(self, count: int) -> list[pb.Node]:
        def ready():
            nodes = [n for n in self.nodes() if n.status.state == pb.NodeStatus.READY]
            return nodes if len(nodes) >= count else None
        return wait_for(ready, 20, what=f"{count} READY nodes")

    def wait_running(self, service: pb.Service, count: int, timeout: float = 30.0) -> list[pb.Task]:
        """Exactly `count` tasks RUNNING and no other task desired to run."""
        def check():
            live = [t for t in self.tasks(service) if t.desired_state <= pb.RUNNING]
            run = [t for t in live if t.status.state == pb.RUNNING]
            return run if len(run) == count == len(live) else None
        try:
            return wait_for(check, timeout, what=f"{count} running tasks")
        except AssertionError:
            states = [(t.annotations.name, pb.TaskState.Name(t.status.state), pb.TaskState.Name(t.desired_state),
                       t.node_id[:6], t.status.err) for t in self.tasks(service)]
            raise AssertionError(f"timed out waiting for {count} running tasks: {states}") from None

    def hostname_of(self, node_id: str) -> str:
        return next(n.description.hostname for n in self.nodes() if n.id == node_id)

    def running_containers(self) -> dict[str, list[dict]]:
        """hostname -> running containers, for the agents that are up."""
        return {a.hostname: a.running() for a in self.agents.values() if a.proc is not None and a.proc.poll() is None}


def leaked_processes(unique: str) -> list[str]:
    """Processes whose command line or cgroup mentions the test's unique suffix (none may remain)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cgroups = Path(f"/proc/{pid}/cgroup").read_text()
            except OSError:
                continue
            if unique in cmd or f"flotilla-test-{unique}" in cgroups:
                found.append(f"process {pid}: {cmd}")
    return found
