"""swarmctl's cluster commands end to end: a `swarmd manager` process on a real etcd, three
`swarmd hollow` agents, and the CLI as a user runs it (through the manager's unix socket)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from manager_process import ManagerProc, leaked_processes

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(150)]
BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


class CLI:
    def __init__(self, manager: ManagerProc) -> None:
        self.env = {**os.environ, "FLOTILLA_MANAGER": f"unix://{manager.socket}"}

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(BIN / "swarmctl"), *args], env=self.env, capture_output=True, text=True, timeout=30)
        if ok:
            assert r.returncode == 0, (args, r.stderr)
        else:
            assert r.returncode != 0, (args, r.stdout)
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        return r

    def json(self, *args: str):
        return json.loads(self(*args, "--format", "json").stdout)

    def wait(self, what: str, check, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")


def running(cli: CLI, service: str, image: str | None = None) -> list[dict]:
    tasks = cli.json("service", "ps", service)
    live = [t for t in tasks if t.get("desired_state") == "RUNNING"]
    return [t for t in live if t.get("status", {}).get("state") == "RUNNING"
            and (image is None or t["spec"]["container"]["image"] == image)]


def test_swarmctl_cluster_commands(etcd_endpoint, tmp_path, unique):
    manager = ManagerProc(etcd_endpoint, tmp_path, f"cli-{unique}")
    manager.start()
    hollow = None
    try:
        cli = CLI(manager)
        cli.wait("the manager", lambda: manager.socket.exists())
        hollow = subprocess.Popen([str(BIN / "swarmd"), "hollow", "--manager", manager.remote, "--nodes", "3",
                                   "--name-prefix", f"cli-{unique}", "--tick", "0.05"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        cli.wait("3 ready nodes", lambda: sum(n["status"].get("state") == "READY" for n in cli.json("node", "ls")) == 3)
        table = cli("node", "ls").stdout.splitlines()
        assert table[0].split()[:4] == ["ID", "HOSTNAME", "STATUS", "AVAILABILITY"] and len(table) == 4

        name = f"web-{unique}"
        sid = cli("service", "create", "--name", name, "--replicas", "2", "-e", "A=1", "--label", "team=x",
                  "--reserve-memory", "16M", "--restart-delay", "0s", "busybox:latest", "sleep", "100").stdout.strip()
        assert len(sid) == 25
        cli.wait("2 running", lambda: len(running(cli, name)) == 2)
        row = [line for line in cli("service", "ls").stdout.splitlines() if name in line][0]
        assert "2/2" in row and "replicated" in row
        spec = cli("service", "inspect", name).stdout
        inspected = json.loads(spec)[0]
        assert inspected["spec"]["task"]["container"]["args"] == ["sleep", "100"]
        assert inspected["spec"]["task"]["resources"]["reservations"]["memory_bytes"] == str(16 << 20)

        assert cli("service", "scale", f"{name}=4").stdout.strip() == f"{name} scaled to 4"
        cli.wait("4 running", lambda: len(running(cli, name)) == 4)
        cli("service", "update", "--image", "busybox:1", "--env-add", "B=2", name)
        cli.wait("4 running on the new image", lambda: len(running(cli, name, "busybox:1")) == 4
                 and len(running(cli, name)) == 4)
        updated = json.loads(cli("service", "inspect", name).stdout)[0]
        assert updated["spec"]["task"]["container"]["env"] == ["A=1", "B=2"] and updated["spec_version"]["index"] == "2"
        tasks = cli.json("task", "ls", "--service", name)
        assert cli("task", "inspect", tasks[0]["id"]).returncode == 0

        # errors: one line, non-zero, nothing changed
        assert "already in use" in cli("service", "create", "--name", name, "busybox", ok=False).stderr
        assert "must not be negative" in cli("service", "create", "--name", "x", "--replicas", "-1", "busybox", ok=False).stderr
        assert "SERVICE=REPLICAS" in cli("service", "scale", f"{name}=many", ok=False).stderr
        assert "invalid placement constraint" in cli("service", "create", "--name", "y", "--constraint", "nonsense", "busybox", ok=False).stderr
        assert "no such service" in cli("service", "inspect", "nosuch", ok=False).stderr
        assert [s["spec"]["annotations"]["name"] for s in cli.json("service", "ls")] == [name]

        node = cli.json("node", "ls")[0]
        cli("node", "update", "--availability", "drain", "--label-add", "zone=a", node["id"][:10])
        after = json.loads(cli("node", "inspect", node["id"]).stdout)[0]
        assert after["spec"]["availability"] == "DRAIN" and after["spec"]["annotations"]["labels"] == {"zone": "a"}
        cli.wait("tasks moved off the drained node", lambda: len(running(cli, name)) == 4
                 and node["id"] not in {t.get("node_id") for t in running(cli, name)})
        assert "--force" in cli("node", "rm", node["id"], ok=False).stderr
        cli("node", "rm", "--force", node["id"])

        import urllib.request
        with urllib.request.urlopen(f"http://{manager.metrics}/metrics", timeout=5) as r:
            scraped = r.read().decode()
        for metric in ('flotilla_tasks{state="RUNNING"}', "flotilla_services", 'flotilla_nodes{state="READY"}',
                       "flotilla_manager_leader 1.0", "flotilla_scheduler_task_latency_seconds_bucket",
                       "flotilla_scheduler_batch_tasks_count", 'flotilla_etcd_request_seconds_count{op="txn"}',
                       "flotilla_dispatcher_sessions", "flotilla_dispatcher_status_updates_total"):
            assert metric in scraped, metric
        cli("service", "rm", name)
        assert cli.json("service", "ls") == []
        cli.wait("the service's tasks gone", lambda: not [t for t in cli.json("task", "ls") if t["service_id"] == sid])
    finally:
        if hollow is not None:
            hollow.terminate()
            hollow.wait(10)
        manager.stop()
    assert manager.proc.returncode == 0, manager.log.read_text()[-2000:]
    assert not manager.socket.exists()
    assert not leaked_processes(unique)
