"""Validation of specs (pure functions): what is refused and the message that says why."""
from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flotilla.manager.controlapi.filters import matches
from flotilla.manager.controlapi.validation import (ValidationError, check_cluster_spec, check_network_spec,
                                                    check_service_spec, check_service_update)
from flotilla.manager.scheduler.constraint import parse_all
from flotilla.proto import control_pb2 as cpb
from flotilla.proto import objects_pb2 as pb


def service(**kw) -> pb.ServiceSpec:
    s = pb.ServiceSpec()
    s.annotations.name = kw.get("name", "web")
    s.task.container.image = kw.get("image", "busybox")
    s.replicated.replicas = kw.get("replicas", 1)
    return s


def test_a_good_spec_passes():
    s = service(replicas=100_000)
    s.task.placement.constraints.append("node.labels.zone==a")
    s.task.placement.preferences.add(spread_descriptor="node.labels.zone")
    s.task.container.env.append("A=1")
    s.task.resources.limits.memory_bytes = 64 << 20
    s.task.resources.reservations.memory_bytes = 32 << 20
    check_service_spec(s)


@pytest.mark.parametrize("change, message", [
    (lambda s: setattr(s.task.container, "image", ""), "image is required"),
    (lambda s: setattr(s.task.container, "image", "a b"), "whitespace"),
    (lambda s: setattr(s.replicated, "replicas", 100_001), "between 0 and 100000"),
    (lambda s: setattr(s.annotations, "name", "-x"), "is invalid"),
    (lambda s: s.task.container.env.append("=x"), "environment entry"),
    (lambda s: s.task.placement.constraints.append("zone=a"), "invalid placement constraint"),
    (lambda s: setattr(s.task.resources.limits, "memory_bytes", 1024), "at least 4 MiB"),
    (lambda s: (setattr(s.task.resources.limits, "nano_cpus", 1), setattr(s.task.resources.reservations, "nano_cpus", 2)), "exceed"),
    (lambda s: s.task.restart.delay.FromSeconds(-1), "restart delay"),
    (lambda s: s.task.container.mounts.add(target="rel"), "absolute path"),
    (lambda s: s.ClearField("replicated"), "mode is required"),
])
def test_bad_service_specs(change, message):
    s = service()
    change(s)
    with pytest.raises(ValidationError, match=message):
        check_service_spec(s)


def test_update_cannot_rename_or_change_mode():
    old = service()
    new = service(name="other")
    with pytest.raises(ValidationError, match="renaming"):
        check_service_update(old, new)
    glob = service()
    getattr(glob, "global").SetInParent()
    with pytest.raises(ValidationError, match="mode"):
        check_service_update(old, glob)


def test_networks_and_cluster():
    check_network_spec(pb.NetworkSpec(annotations=pb.Annotations(name="n"), ipam=[pb.IPAMConfig(subnet="10.0.0.0/24", gateway="10.0.0.1", range="10.0.0.128/25")]))
    with pytest.raises(ValidationError, match="outside the subnet"):
        check_network_spec(pb.NetworkSpec(annotations=pb.Annotations(name="n"), ipam=[pb.IPAMConfig(subnet="10.0.0.0/24", range="10.1.0.0/25")]))
    with pytest.raises(ValidationError, match="subnet"):
        check_network_spec(pb.NetworkSpec(annotations=pb.Annotations(name="n"), ipam=[pb.IPAMConfig(subnet="10.0.0.1/24")]))
    c = pb.ClusterSpec()
    c.dispatcher.heartbeat_period.FromMilliseconds(10)
    with pytest.raises(ValidationError, match="at least 100ms"):
        check_cluster_spec(c)


def test_filters():
    n = pb.Node(id="abcdef")
    n.description.hostname = "host1"
    n.description.engine_labels["disk"] = "ssd"
    n.spec.annotations.labels["zone"] = "a"
    assert matches("node", n, cpb.Filters())
    assert matches("node", n, cpb.Filters(names=["host1"], id_prefixes=["ab"], labels={"zone": "a", "disk": ""}))
    assert not matches("node", n, cpb.Filters(labels={"zone": "b"}))
    assert not matches("node", n, cpb.Filters(name_prefixes=["x"]))


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({
    "name": st.text(max_size=70), "image": st.text(max_size=30), "replicas": st.integers(0, 2**64 - 1),
    "command": st.lists(st.text(max_size=8), max_size=3), "env": st.lists(st.text(max_size=10), max_size=3),
    "dir": st.text(max_size=8), "labels": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    "mounts": st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=2),
    "constraints": st.lists(st.text(max_size=25) | st.from_regex(r"node\.(labels\.[a-z]{1,4}|hostname|role) ?(==|!=) ?[a-z\0]{0,4}",
                                                                  fullmatch=True), max_size=2),
    "memory": st.integers(-(2**63), 2**63 - 1), "grace_seconds": st.integers(-10**6, 10**6)}))
@example({"name": "web", "image": "busybox", "replicas": 1, "command": ["sh\0"], "env": [], "dir": "", "labels": {},
          "mounts": [], "constraints": [], "memory": 0, "grace_seconds": 0})
def test_fuzzed_specs_pass_cleanly_or_refuse_in_one_line(f) -> None:
    """Any spec is either refused with a ValidationError or is one the nodes can carry out."""
    s = service(name=f["name"], image=f["image"])
    s.replicated.replicas = f["replicas"]
    c = s.task.container
    c.command.extend(f["command"])
    c.env.extend(f["env"])
    c.dir = f["dir"]
    c.labels.update(f["labels"])
    for source, target in f["mounts"]:
        c.mounts.add(source=source, target=target)
    s.task.placement.constraints.extend(f["constraints"])
    s.task.resources.limits.memory_bytes = f["memory"]
    c.stop_grace_period.seconds = f["grace_seconds"]
    try:
        check_service_spec(s)
    except ValidationError as e:
        assert "\n" not in str(e)  # one line, whatever the input held
        return
    strings = [*c.command, *c.env, c.dir, *c.labels, *c.labels.values(), *(m.source for m in c.mounts)]
    assert not any("\0" in x for x in strings)
    assert all(m.target.startswith("/") for m in c.mounts) and 0 <= s.replicated.replicas <= 100_000
    assert c.stop_grace_period.seconds >= 0 and s.task.resources.limits.memory_bytes >= 0
    parse_all(list(s.task.placement.constraints))
