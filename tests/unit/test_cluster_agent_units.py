"""The agent's cluster side without root: task → container spec, flags, status batching."""
from __future__ import annotations

import asyncio

import pytest

from flotilla.agent.reporter import Reporter
from flotilla.agent.session import NodeIdentity, describe_node, parse_labels, parse_managers
from flotilla.agent.task_container import container_name, container_spec, grace_seconds
from flotilla.manager.logbroker import task_display_name
from flotilla.proto import objects_pb2 as pb
from flotilla.runtime.errors import InvalidArgument
from flotilla.swarmctl.service_logs import format_line


def task() -> pb.Task:
    t = pb.Task(id="abcdefghijklmnopqrstuvwxy", service_id="svc1", slot=2, node_id="n1", desired_state=pb.RUNNING)
    t.annotations.name = "web.2"
    t.service_annotations.name = "web"
    c = t.spec.container
    c.image = "busybox:latest"
    c.command.append("/bin/sh")
    c.args.extend(["-c", "httpd -f"])
    c.env.append("A=1")
    c.dir = "/tmp"
    c.labels["app"] = "x"
    c.mounts.add(type=pb.Mount.VOLUME, source="data", target="/data", readonly=True)
    c.stop_signal = "SIGINT"
    c.stop_grace_period.FromMilliseconds(2500)
    c.init = True
    t.spec.resources.limits.nano_cpus = 500_000_000
    t.spec.resources.limits.memory_bytes = 64 << 20
    return t


def test_container_spec_from_task():
    spec = container_spec(task(), "n1")
    assert spec.name == "web.2.abcdefghijklmnopqrstuvwxy" == container_name(task())
    assert spec.entrypoint == ["/bin/sh"] and spec.cmd == ["-c", "httpd -f"]
    assert spec.env == ["A=1"] and spec.workdir == "/tmp"
    assert spec.restart_policy.name == "no" and spec.init
    assert spec.memory == 64 << 20 and spec.cpus == 0.5
    assert spec.stop_signal == "SIGINT" and spec.stop_timeout == 3  # rounded up, never shortened
    assert [(m.source, m.destination, m.readonly) for m in spec.mounts] == [("data", "/data", True)]
    assert spec.labels == {
        "app": "x",
        "com.docker.swarm.task.id": "abcdefghijklmnopqrstuvwxy",
        "com.docker.swarm.task.name": "web.2.abcdefghijklmnopqrstuvwxy",
        "com.docker.swarm.service.id": "svc1",
        "com.docker.swarm.service.name": "web",
        "com.docker.swarm.node.id": "n1",
    }


def test_container_spec_defaults_and_global_name():
    t = pb.Task(id="t1", service_id="s1", node_id="node9")
    t.service_annotations.name = "agent"
    t.spec.container.image = "busybox"
    spec = container_spec(t, "node9")
    assert spec.name == "agent.node9.t1"  # global tasks are named after their node
    assert spec.cmd is None and spec.entrypoint is None  # the image's
    assert grace_seconds(t) == 10


def test_relative_bind_source_is_refused():
    t = task()
    t.spec.container.mounts.add(type=pb.Mount.BIND, source="relative/dir", target="/x")
    with pytest.raises(InvalidArgument, match="must be an absolute path"):
        container_spec(t, "n1")


def test_flags():
    assert parse_managers("127.0.0.1:1, [::1]:2") == ["127.0.0.1:1", "[::1]:2"]
    for bad in ("", "host", "host:0", "host:x", ":80"):
        with pytest.raises(ValueError):
            parse_managers(bad)
    assert parse_labels(["zone=a", "empty="]) == {"zone": "a", "empty": ""}
    with pytest.raises(ValueError, match="key=value"):
        parse_labels(["novalue"])


def test_node_description_and_identity(tmp_path):
    d = describe_node("h1", {"zone": "a"})
    assert d.hostname == "h1" and d.engine_labels["zone"] == "a"
    assert d.resources.nano_cpus >= 1_000_000_000 and d.resources.memory_bytes > 0
    assert d.platform.os == "linux"
    ident = NodeIdentity(tmp_path)
    assert ident.node_id == ""
    ident.set("node-1")
    assert NodeIdentity(tmp_path).node_id == "node-1"


def status(state: int) -> pb.TaskStatus:
    return pb.TaskStatus(state=state)


def test_reporter_coalesces_and_never_goes_back():
    async def scenario():
        rep = Reporter()
        sent: list[list] = []
        fail = [True]

        async def send(updates):
            if fail[0]:
                fail[0] = False
                raise ConnectionError("no session")
            sent.append([(u.task_id, u.status.state) for u in updates])

        for s in (pb.ACCEPTED, pb.PREPARING, pb.READY, pb.STARTING, pb.RUNNING):
            rep.report("t1", status(s))
        rep.report("t1", status(pb.PREPARING))  # backwards: dropped
        rep.report("t2", status(pb.REJECTED))
        with pytest.raises(ConnectionError):
            await rep.run(send)  # the first send fails: the session is over, nothing is lost
        job = asyncio.ensure_future(rep.run(send))
        rep.report("t3", status(pb.ACCEPTED))
        rep.forget("t2")  # left the assignments before it could be resent
        await asyncio.sleep(0.3)
        job.cancel()
        assert sent == [[("t1", pb.RUNNING), ("t3", pb.ACCEPTED)]]
        rep.resend_all()  # a new session: everything observed goes again
        job = asyncio.ensure_future(rep.run(send))
        await asyncio.sleep(0.3)
        job.cancel()
        assert sorted(sent[-1]) == [("t1", pb.RUNNING), ("t3", pb.ACCEPTED)]
    asyncio.run(scenario())


def test_log_prefix():
    t = task()
    assert task_display_name(t) == "web.2.abcdefghijkl"
    from flotilla.proto import logbroker_pb2 as lpb
    m = lpb.LogMessage(data=b"hello")
    m.context.task_name, m.context.node_name = "web.2.abcdefghijkl", "h1"
    assert format_line(m, False, False, 24) == b"web.2.abcdefghijkl@h1    | hello\n"
    assert format_line(m, True, False, 0) == b"web.2@h1 | hello\n"
