"""Container start latency and memory, Flotilla side by side with runc (and Docker if running).

Measures, in one run (medians of --runs repetitions):
  (a) create + start + wait + remove of /bin/true through the gRPC API, warm client (also per call,
      and the agent's CPU time per container, which depends far less on other load than wall time);
      also the same four calls over the agent's CLI socket (the same servicer and messages in
      swarmctl's framing, without HTTP/2), to show what the transport costs
  (b) `swarmctl run --rm --network none busybox /bin/true` end to end (a new CLI process each time),
      over the agent's CLI socket (swarmctl's default) and over gRPC (FLOTILLA_TRANSPORT=grpc),
      alternating run by run so both see the same machine load; wall time and the CLI's CPU time
  (c) `runc run` of the same rootfs as an OCI bundle (`runc spec`, no network)
  (d) `docker run --rm --network none` of the same rootfs: on the engine that answers `docker info`,
      else (with the docker.io package installed) on a private dockerd started for the run
      (bench/private_dockerd.py: own roots and socket, host networking untouched); --docker none skips it
and prints the ratios to runc ((a) and (c) run in turn, one sample each, so both see the same
load), the shim's RSS per running container (20 `sleep` containers;
containerd-shim-runc-v2 is about 13 MB) and the agent's idle RSS.

Everything runs on a temporary agent with its own root, socket and cgroup parent, and is
removed at the end, whatever happens.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from private_dockerd import DockerEngine, PrivateDockerd, host_docker  # noqa: E402
CONTAINERD_SHIM_RSS_MB = 13.0
DOCKER_MEASURED_MS = 224.0  # `docker run --rm --network none` on this machine (issue 2), when no engine runs now
SHIMS = 20


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cli_runs(argv: list[str], runs: int) -> dict[str, tuple[float, float]]:
    """Median (wall ms, CPU ms of the CLI process) per transport, the transports alternating."""
    samples: dict[str, list[tuple[float, float]]] = {"cli socket": [], "grpc": []}
    envs = {"cli socket": {**os.environ, "FLOTILLA_TRANSPORT": "cli"},
            "grpc": {**os.environ, "FLOTILLA_TRANSPORT": "grpc"}}
    for i in range(runs + 1):  # the first round warms up
        for name, env in envs.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, env=env)
            wall = (time.perf_counter() - t0) * 1000
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
            if i:
                samples[name].append((wall, cpu))
    return {name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
            for name, s in samples.items()}


def timed(fn, runs: int) -> float:
    """Median wall time of `fn()` in milliseconds, after one warm-up call."""
    return timed_alternating([fn], runs)[0]


def timed_alternating(fns: list, runs: int) -> list[float]:
    """Median wall times (ms) of several functions called in turn, one sample each per round, after
    one warm-up round: on a shared machine every one of them sees the same load."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(fns, samples):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000)
    return [statistics.median(x) for x in samples]


class BenchAgent:
    def __init__(self, tmp: Path) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.root = tmp / "state"
        self.socket = tmp / "agent.sock"
        self.cgroup_parent = f"flotilla-bench-{self.suffix}"
        self.log = open(tmp / "agent.log", "wb")
        self.proc = subprocess.Popen(
            [str(BIN / "swarmd"), "agent", "--root", str(self.root), "--listen-local", f"unix://{self.socket}",
             "--cgroup-parent", self.cgroup_parent], stdout=self.log, stderr=self.log, start_new_session=True)
        import grpc
        from flotilla.proto import runtime_pb2, runtime_pb2_grpc

        self.pb = runtime_pb2
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent did not start; see {tmp / 'agent.log'}")
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = runtime_pb2_grpc.RuntimeStub(self.channel)
        from flotilla.proto.framing import cli_socket_path
        from flotilla.swarmctl.socket_client import SocketMethods

        self.cli_stub = SocketMethods(cli_socket_path(str(self.socket)), runtime_pb2)

    def import_image(self, tar: Path, ref: str) -> None:
        pb = self.pb

        def requests():
            yield pb.ImportImageRequest(header=pb.ImportHeader(reference=ref, changes_json='{"Cmd": ["sh"]}'))
            with open(tar, "rb") as f:
                while data := f.read(1 << 20):
                    yield pb.ImportImageRequest(data=data)

        self.stub.ImportImage(requests())

    def run_true(self, image: str, phases: dict[str, list[float]] | None = None, cli: bool = False) -> None:
        """create, start, wait, remove (over gRPC, or the CLI socket with `cli`); with `phases`, each
        call's wall time (ms) is appended there."""
        pb = self.pb
        stub = self.cli_stub if cli else self.stub
        t0 = time.perf_counter()
        info = stub.CreateContainer(pb.ContainerSpec(image=image, cmd=["/bin/true"], cmd_set=True,
                                                     network_mode="none"))
        t1 = time.perf_counter()
        stub.StartContainer(pb.ContainerRef(ref=info.id))
        t2 = time.perf_counter()
        stub.WaitContainer(pb.ContainerRef(ref=info.id))
        t3 = time.perf_counter()
        stub.RemoveContainer(pb.RemoveRequest(ref=info.id, force=True))
        t4 = time.perf_counter()
        if phases is not None:
            for name, a, b in (("create", t0, t1), ("start", t1, t2), ("wait", t2, t3), ("remove", t3, t4)):
                phases.setdefault(name, []).append((b - a) * 1000)

    def cpu_ms(self) -> float:
        """CPU time (user + system) the agent process has used so far, every thread included."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        pb = self.pb
        try:
            for c in self.stub.ListContainers(pb.ListContainersRequest(all=True)).containers:
                self.stub.RemoveContainer(pb.RemoveRequest(ref=c.id, force=True, volumes=True))
        finally:
            self.channel.close()
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
            self.log.close()
            for parent in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
                if parent.parent.is_symlink() or not parent.exists():
                    continue
                for child in sorted(parent.rglob("*"), reverse=True):
                    if child.is_dir():
                        child.rmdir()
                parent.rmdir()


def runc_bundle(tmp: Path, tar: Path) -> Path:
    bundle = tmp / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(tar), "-C", str(bundle / "rootfs")], check=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    (bundle / "config.json").write_text(json.dumps(config))  # runc spec's default: a new, empty netns
    return bundle


def docker_run_rm(engine: DockerEngine, tar: Path, suffix: str, runs: int) -> float:
    """Median of `docker run --rm --network none` of the busybox rootfs, from a new CLI process each time."""
    image = f"flotilla-bench-busybox:{suffix}"
    engine.docker("import", str(tar), image)
    try:
        argv = ["docker", "run", "--rm", "--network", "none", image, "/bin/true"]
        return timed(lambda: subprocess.run(argv, check=True, env=engine.env, capture_output=True), runs)
    finally:
        engine.docker("rmi", "-f", image, check=False)


def measure_docker(mode: str, tar: Path, tmp: Path, suffix: str, runs: int) -> tuple[float | None, str]:
    """(median ms or None, where it came from) per --docker."""
    if mode == "none":
        return None, "docker: skipped (--docker none)"
    engine = host_docker() if mode == "auto" else None
    if engine is not None:
        return docker_run_rm(engine, tar, suffix, runs), "docker: the engine that answers `docker info`"
    if not shutil.which("dockerd") or not shutil.which("docker"):
        return None, "docker: skipped (no engine running and dockerd not installed)"
    with PrivateDockerd(tmp, suffix) as engine:
        return docker_run_rm(engine, tar, suffix, runs), "docker: a private dockerd started for this run"


def shim_rss(agent: BenchAgent, image: str) -> tuple[float, float]:
    """Average RSS of a shim over SHIMS running `sleep` containers, and the agent's RSS meanwhile (MB)."""
    pb = agent.pb
    ids = []
    for _ in range(SHIMS):
        info = agent.stub.CreateContainer(pb.ContainerSpec(image=image, cmd=["sleep", "600"], cmd_set=True,
                                                           network_mode="none"))
        agent.stub.StartContainer(pb.ContainerRef(ref=info.id))
        ids.append(info.id)
    pids = [int((agent.root / "containers" / cid / "shim.pid").read_text()) for cid in ids]
    shim_mb = sum(rss_kb(p) for p in pids) / len(pids) / 1024
    agent_mb = rss_kb(agent.proc.pid) / 1024
    for cid in ids:
        agent.stub.RemoveContainer(pb.RemoveRequest(ref=cid, force=True))
    return shim_mb, agent_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="repetitions per measurement (default 20)")
    parser.add_argument("--docker", choices=("auto", "private", "none"), default="auto",
                        help="auto: the running engine, else a private dockerd; private: always a private one; "
                             "none: skip Docker")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark needs root (namespaces, cgroups)")
    from flotilla.swarmd.busybox_image import write_busybox_tar

    # as `make setup` does: with PYTHONDONTWRITEBYTECODE every CLI run would compile from source
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(REPO / d) for d in
                    ("proto", "runtime", "agent", "manager", "swarmctl", "swarmd"))], check=True)

    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tar = write_busybox_tar(tmp / "busybox.tar")
        agent = BenchAgent(tmp)
        results: dict[str, float] = {}
        try:
            image = f"bench-busybox-{agent.suffix}:latest"
            agent.import_image(tar, image)
            time.sleep(0.5)
            idle_mb = rss_kb(agent.proc.pid) / 1024
            bundle = runc_bundle(tmp, tar)
            runc_root = tmp / "runc-state"

            def runc_run() -> None:
                subprocess.run(["runc", "--root", str(runc_root), "run", "-b", str(bundle),
                                f"bench-{agent.suffix}-{uuid.uuid4().hex[:6]}"], check=True)

            phases: dict[str, list[float]] = {}
            cpu_before = agent.cpu_ms()  # runc's runs do not touch the agent
            grpc_ms, runc_ms = timed_alternating([lambda: agent.run_true(image, phases), runc_run], args.runs)
            agent_cpu_ms = (agent.cpu_ms() - cpu_before) / (args.runs + 1)
            results["grpc create+start+wait+rm"] = grpc_ms
            cli_ms, runc_again = timed_alternating([lambda: agent.run_true(image, cli=True), runc_run], args.runs)
            results["same over the cli socket"] = cli_ms
            cli_note = (f"  (the cli-socket row ran in turn with runc runs of its own: {runc_again:.1f} ms, "
                        f"ratio {cli_ms / runc_again:.2f}x)")
            ctl = [str(BIN / "swarmctl"), "-H", f"unix://{agent.socket}", "run", "--rm", "--network", "none", image, "/bin/true"]
            cli = cli_runs(ctl, args.runs)
            for transport, (wall, _) in cli.items():
                results[f"swarmctl run --rm ({transport})"] = wall
            results["runc run"] = runc_ms
            shim_mb, busy_agent_mb = shim_rss(agent, image)
        finally:
            agent.close()
        docker_ms, docker_note = measure_docker(args.docker, tar, tmp, agent.suffix, args.runs)
        if docker_ms is not None:
            results["docker run --rm"] = docker_ms

    runc_ms = results["runc run"]
    print(f"container start, median of {args.runs} runs (busybox /bin/true):")
    for name, ms in results.items():
        print(f"  {name:28s} {ms:8.1f} ms   {ms / runc_ms:5.2f}x runc")
    print(cli_note)
    print(f"  {docker_note}")
    print("  (a) per call: " + ", ".join(f"{name} {statistics.median(ms[1:]):.1f}"  # [0]: the warm-up
                                         for name, ms in phases.items())
          + f" ms; the agent's CPU time {agent_cpu_ms:.1f} ms per container")
    docker_ms = results.get("docker run --rm", DOCKER_MEASURED_MS)
    docker_from = "measured now" if "docker run --rm" in results else f"{DOCKER_MEASURED_MS:.0f} ms measured here before"
    for transport, (wall, cpu) in cli.items():
        print(f"  swarmctl ({transport}): CPU {cpu:.1f} ms user+sys; {wall / docker_ms:.2f}x docker run --rm "
              f"({docker_from}; goal <= 0.50x)")
    print(f"shim RSS per running container: {shim_mb:.2f} MB over {SHIMS} containers "
          f"(containerd-shim-runc-v2: ~{CONTAINERD_SHIM_RSS_MB:.0f} MB, {shim_mb / CONTAINERD_SHIM_RSS_MB:.2f}x)")
    print(f"agent RSS: {idle_mb:.1f} MB idle, {busy_agent_mb:.1f} MB with {SHIMS} running containers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
