"""The agent's worker and task controllers on the real runtime (real containers, no manager):
assignments go in as the session would hand them over, statuses come out of the reporter."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flotilla.agent.reporter import Reporter
from flotilla.agent.worker import Worker
from flotilla.proto import dispatcher_pb2 as dpb
from flotilla.proto import objects_pb2 as pb
from flotilla.runtime.runtime import Runtime

pytestmark = pytest.mark.root
CGROUP_ROOT = Path("/sys/fs/cgroup")


def make_task(unique: str, slot: int, args: list[str], image: str = "busybox:latest", grace: float = 1.0) -> pb.Task:
    t = pb.Task(id=f"t{slot}{unique}", service_id=f"s{unique}", slot=slot, node_id="n1", desired_state=pb.RUNNING)
    t.annotations.name = f"web{unique}.{slot}"
    t.service_annotations.name = f"web{unique}"
    t.spec.container.image = image
    t.spec.container.args.extend(args)
    t.spec.container.labels["app"] = "demo"
    t.spec.container.stop_grace_period.FromNanoseconds(int(grace * 1e9))
    t.status.state = pb.ASSIGNED
    return t


async def until(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def state(reporter: Reporter, task: pb.Task) -> int:
    s = reporter.observed(task.id)
    return s.state if s else 0


@pytest.fixture
def runtime(tmp_path, unique, busybox_tar):
    rt = Runtime(tmp_path / "root", cgroup_parent=f"flotilla-test-{unique}")
    rt.import_image(busybox_tar, "busybox:latest")
    yield rt
    for c in rt.list(all=True):
        rt.remove(c.id, force=True)
    rt.close_cgroup_parent()
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if str(tmp_path) in line]
    assert not list(CGROUP_ROOT.glob(f"*/flotilla-test-{unique}"))


def test_task_walks_to_running_and_shuts_down(runtime, unique):
    async def scenario():
        reporter = Reporter()
        worker = Worker(runtime, reporter)
        worker.node_id = "n1"
        await worker.scan()
        task = make_task(unique, 1, ["sleep", "1000"])
        worker.apply_complete([task])
        await until(lambda: state(reporter, task) == pb.RUNNING, what="RUNNING")
        info = runtime.get(f"web{unique}.1.{task.id}")
        assert info.status == "running"
        assert info.spec.restart_policy.name == "no"
        assert info.spec.labels["com.docker.swarm.task.id"] == task.id
        assert info.spec.labels["com.docker.swarm.service.name"] == f"web{unique}"
        assert info.spec.labels["com.docker.swarm.node.id"] == "n1"
        assert info.spec.labels["app"] == "demo"
        running = reporter.observed(task.id)
        assert running.container_status.container_id == info.id and running.container_status.pid > 0

        stopped = pb.Task()
        stopped.CopyFrom(task)
        stopped.desired_state = pb.SHUTDOWN
        worker.apply_changes([dpb.AssignmentChange(action=dpb.AssignmentChange.UPDATE, task=stopped)])
        await until(lambda: state(reporter, task) == pb.SHUTDOWN, what="SHUTDOWN")
        assert runtime.get(info.id).status == "exited"  # kept until the task leaves the assignments
        worker.apply_complete([])
        await until(lambda: not runtime.list(all=True), what="the container to be removed")
        worker.close()
    asyncio.run(scenario())


def test_cluster_metrics(runtime, unique, tmp_path):
    """Tasks by state and per-task usage from the cgroups, labelled by service and task."""
    from prometheus_client.core import CollectorRegistry

    from flotilla.agent.cluster_metrics import ClusterCollector
    from flotilla.agent.session import ClusterAgent

    async def scenario():
        agent = ClusterAgent(runtime, tmp_path, ["127.0.0.1:1"], hostname=f"h{unique}")  # no session: never started
        agent.worker.node_id = "n1"
        await agent.worker.scan()
        task = make_task(unique, 1, ["sleep", "1000"])
        agent.worker.apply_complete([task])
        await until(lambda: state(agent.reporter, task) == pb.RUNNING, what="RUNNING")
        registry = CollectorRegistry()
        registry.register(ClusterCollector(agent))
        get = registry.get_sample_value
        assert get("flotilla_agent_tasks", {"state": "running"}) == 1
        assert get("flotilla_agent_session_connected") == 0
        labels = {"service": f"web{unique}", "task": task.id, "name": f"web{unique}.1.{task.id}"}
        assert get("flotilla_task_pids", labels) >= 1
        assert get("flotilla_task_memory_usage_bytes", labels) > 0
        assert get("flotilla_task_cpu_usage_seconds_total", labels) >= 0
        agent.worker.apply_complete([])
        await until(lambda: not runtime.list(all=True), what="the container to be removed")
        await agent.close()
    asyncio.run(scenario())


def test_exit_codes_and_rejection(runtime, unique):
    async def scenario():
        reporter = Reporter()
        worker = Worker(runtime, reporter)
        worker.node_id = "n1"
        await worker.scan()
        ok = make_task(unique, 1, ["true"])
        bad = make_task(unique, 2, ["sh", "-c", "exit 3"])
        missing = make_task(unique, 3, ["true"], image=f"nosuch{unique}:latest")
        notfound = make_task(unique, 4, ["/nosuch"])
        worker.apply_complete([ok, bad, missing, notfound])
        await until(lambda: state(reporter, ok) == pb.COMPLETE, what="COMPLETE")
        await until(lambda: state(reporter, bad) == pb.FAILED, what="FAILED")
        assert reporter.observed(bad.id).container_status.exit_code == 3
        assert reporter.observed(bad.id).err == "task: non-zero exit (3)"
        await until(lambda: state(reporter, missing) == pb.REJECTED, what="REJECTED")
        assert reporter.observed(missing.id).err == f"No such image: nosuch{unique}:latest"
        await until(lambda: state(reporter, notfound) == pb.FAILED, what="FAILED on exec")
        assert reporter.observed(notfound.id).container_status.exit_code == 127
        worker.apply_complete([])
        await until(lambda: not runtime.list(all=True), what="containers to be removed")
        worker.close()
    asyncio.run(scenario())


def test_restarted_agent_adopts_running_task(runtime, unique):
    """A new worker (the agent restarted) finds the container by its label and keeps it."""
    async def scenario():
        reporter = Reporter()
        worker = Worker(runtime, reporter)
        worker.node_id = "n1"
        await worker.scan()
        task = make_task(unique, 1, ["sleep", "1000"])
        gone = make_task(unique, 2, ["sleep", "1000"])
        worker.apply_complete([task, gone])
        await until(lambda: state(reporter, task) == state(reporter, gone) == pb.RUNNING, what="RUNNING")
        before = runtime.get(f"web{unique}.1.{task.id}")
        worker.close()  # the agent goes away; containers stay

        reporter2 = Reporter()
        worker2 = Worker(runtime, reporter2)
        worker2.node_id = "n1"
        await worker2.scan()
        seen = pb.Task()
        seen.CopyFrom(task)
        seen.status.state = pb.RUNNING  # what the manager knows
        worker2.apply_complete([seen])  # `gone` was rescheduled meanwhile: its container must go
        await until(lambda: len(runtime.list(all=True)) == 1, what="the unassigned container to be removed")
        await asyncio.sleep(0.5)
        after = runtime.get(before.id)
        assert after.status == "running" and after.pid == before.pid and after.restart_count == 0
        assert reporter2.observed(task.id) is None  # nothing new to report: it is still RUNNING
        worker2.close()
    asyncio.run(scenario())


def test_prepare_pulls_a_missing_image(runtime, unique, tmp_path):
    """A task whose image is not local gets it from its registry (a docker-registry on
    loopback); an image the registry does not have is REJECTED with the registry's answer."""
    from images_support import run_registry

    from flotilla.runtime.imaging.service import ImageService

    images = ImageService(runtime._images, users=runtime._image_users)
    (tmp_path / "reg").mkdir()
    with run_registry(tmp_path / "reg") as reg:
        ref = f"{reg.host}/bb{unique}:1"
        runtime.tag_image("busybox:latest", ref)
        images.push(ref)
        runtime.remove_image(ref)  # only the tag: busybox:latest keeps the image

        async def scenario():
            reporter = Reporter()
            worker = Worker(runtime, reporter, images)
            worker.node_id = "n1"
            await worker.scan()
            task = make_task(unique, 1, ["sleep", "1000"], image=ref)
            missing = make_task(unique, 2, ["true"], image=f"{reg.host}/nosuch{unique}:1")
            worker.apply_complete([task, missing])
            await until(lambda: state(reporter, task) == pb.RUNNING, what="RUNNING after the pull")
            assert runtime.image(ref).repo_tags
            await until(lambda: state(reporter, missing) == pb.REJECTED, what="REJECTED")
            assert reporter.observed(missing.id).err.startswith(f"pulling {reg.host}/nosuch{unique}:1: ")
            worker.apply_complete([])
            await until(lambda: not runtime.list(all=True), what="the container to be removed")
            worker.close()
        asyncio.run(scenario())
