"""The allocator (pure functions): cluster networks' address plans, services' attachments, host
ports, the dispatcher's copy of networks into tasks, and the CLI's parsing of those flags."""
from __future__ import annotations

import pytest

from flotilla.agent.task_container import container_spec, port_specs
from flotilla.manager.allocator import AllocationError, allocate_network, resolve_attachments
from flotilla.manager.controlapi.validation import ValidationError, check_service_spec
from flotilla.manager.dispatcher.networks import attach_networks
from flotilla.manager.store import NotFound
from flotilla.proto import objects_pb2 as pb
from flotilla.swarmctl.cluster.connect import ClusterError
from flotilla.swarmctl.cluster.values import network_attachment, port_config


def spec(name: str = "app", subnet: str = "", driver: str = "", **kw) -> pb.NetworkSpec:
    s = pb.NetworkSpec(driver=driver, **kw)
    s.annotations.name = name
    if subnet:
        s.ipam.add(subnet=subnet)
    return s


def network(name: str, subnet: str, net_id: str = "") -> pb.Network:
    n = pb.Network(id=net_id or f"id-{name}", spec=spec(name))
    n.ipam.add(subnet=subnet, gateway=subnet.rsplit(".", 1)[0] + ".1")
    return n


def test_default_plan_is_the_first_free_slash_24_of_10_0_0_0_8():
    assert allocate_network(spec(), []) == [pb.IPAMConfig(subnet="10.0.0.0/24", gateway="10.0.0.1")]
    taken = [network("a", "10.0.0.0/24"), network("b", "10.0.1.0/24"), network("c", "10.0.3.0/24")]
    assert allocate_network(spec(), taken)[0].subnet == "10.0.2.0/24"


def test_a_big_user_subnet_is_skipped_over_by_default_plans():
    (plan,) = allocate_network(spec(), [network("wide", "10.0.0.0/22")])
    assert plan.subnet == "10.0.4.0/24"


def test_the_users_subnet_is_kept_with_a_gateway():
    (plan,) = allocate_network(spec(subnet="192.0.2.0/28"), [network("a", "10.0.0.0/24")])
    assert (plan.subnet, plan.gateway) == ("192.0.2.0/28", "192.0.2.1")
    s = spec()
    s.ipam.add(subnet="192.0.2.0/24", gateway="192.0.2.254", range="192.0.2.128/25")
    assert allocate_network(s, []) == [pb.IPAMConfig(subnet="192.0.2.0/24", gateway="192.0.2.254", range="192.0.2.128/25")]


@pytest.mark.parametrize("make, message", [
    (lambda: spec(driver="overlay"), "overlay driver is not built yet"),
    (lambda: spec(driver="macvlan"), "driver 'macvlan' is not supported"),
    (lambda: spec(name="bridge"), "reserved"),
    (lambda: spec(subnet="10.0.0.128/25"), "overlaps 10.0.0.0/24 of network a"),
    (lambda: spec(subnet="192.0.2.0/31"), "too small"),
    (lambda: spec(subnet="2001:db8::/64"), "not IPv4"),
    (lambda: spec(options={"com.docker.network.bridge.name": "br0"}), "not supported on cluster networks"),
])
def test_bad_networks_are_refused_in_one_line(make, message):
    with pytest.raises(AllocationError, match=message) as err:
        allocate_network(make(), [network("a", "10.0.0.0/24")])
    assert "\n" not in str(err.value)


def test_two_subnets_are_refused():
    s = spec(subnet="192.0.2.0/24")
    s.ipam.add(subnet="198.51.100.0/24")
    with pytest.raises(AllocationError, match="one subnet"):
        allocate_network(s, [])


def finder(*networks: pb.Network):
    def find(ref: str) -> pb.Network:
        for n in networks:
            if ref in (n.id, n.spec.annotations.name) or n.id.startswith(ref):
                return n
        raise NotFound(f"no such network: {ref}")
    return find


def test_attachments_are_resolved_to_ids():
    find = finder(network("front", "10.0.0.0/24", "f" * 25), network("back", "10.0.1.0/24", "b" * 25))
    task = pb.TaskSpec()
    task.networks.add(target="front", aliases=["web"])
    task.networks.add(target="bbbb")
    resolve_attachments(task, find)
    assert [a.target for a in task.networks] == ["f" * 25, "b" * 25]
    assert list(task.networks[0].aliases) == ["web"]


@pytest.mark.parametrize("targets, aliases, message", [
    (["nosuch"], [], "network 'nosuch' not found: create it first"),
    (["front", "f" * 25], [], "given twice"),
    (["front"], ["-bad"], "alias '-bad' is invalid"),
])
def test_bad_attachments_are_refused(targets, aliases, message):
    task = pb.TaskSpec()
    for t in targets:
        task.networks.add(target=t, aliases=aliases)
    with pytest.raises(AllocationError, match=message):
        resolve_attachments(task, finder(network("front", "10.0.0.0/24", "f" * 25)))


class FakeStore:
    """The one store method attach_networks reads (a dict, not a mock of etcd)."""

    def __init__(self, *networks: pb.Network) -> None:
        self.networks = {n.id: n for n in networks}

    def get(self, kind: str, obj_id: str):
        assert kind == "network"
        return self.networks.get(obj_id)


def test_the_dispatcher_copies_networks_and_aliases_into_the_task():
    front = network("front", "10.0.0.0/24", "f1")
    t = pb.Task(id="t1", service_id="s1")
    t.service_annotations.name = "web"
    t.spec.networks.add(target="f1", aliases=["www", "web"])
    t.spec.networks.add(target="gone")
    attach_networks(t, FakeStore(front))
    (att,) = t.networks
    assert att.network == front and list(att.aliases) == ["web", "tasks.web", "www"]
    plain = pb.Task(id="t2")
    attach_networks(plain, FakeStore(front))
    assert not plain.networks


def test_ports_must_be_host_mode_and_unique():
    s = pb.ServiceSpec()
    s.annotations.name = "web"
    s.task.container.image = "busybox"
    s.replicated.replicas = 1
    s.task.endpoint.ports.add(target_port=80, published_port=8080, publish_mode=pb.PortConfig.HOST)
    check_service_spec(s)
    s.task.endpoint.ports.add(target_port=81, published_port=8080, publish_mode=pb.PortConfig.HOST)
    with pytest.raises(ValidationError, match="given twice"):
        check_service_spec(s)
    del s.task.endpoint.ports[1:]
    s.task.endpoint.ports.add(target_port=80, published_port=9090)
    with pytest.raises(ValidationError, match="routing mesh"):
        check_service_spec(s)


def test_cli_parses_network_and_publish_flags():
    assert network_attachment("front") == pb.NetworkAttachmentConfig(target="front")
    assert network_attachment("name=front,alias=a,alias=b") == pb.NetworkAttachmentConfig(target="front", aliases=["a", "b"])
    for bad in ("", "alias=a", "name=x,color=red"):
        with pytest.raises(ClusterError):
            network_attachment(bad)
    host = port_config("published=8080,target=80,mode=host,protocol=udp")
    assert (host.published_port, host.target_port, host.publish_mode, host.protocol) == (8080, 80, pb.PortConfig.HOST, pb.PortConfig.UDP)
    assert port_config("8080:80").publish_mode == pb.PortConfig.INGRESS  # refused by the manager, in one line
    for bad in ("published=8080", "target=0,mode=host", "target=80,mode=bridge"):
        with pytest.raises(ClusterError):
            port_config(bad)


def test_task_container_networks_and_ports():
    t = pb.Task(id="t1", service_id="s1", slot=1)
    t.service_annotations.name = "web"
    t.spec.container.image = "busybox"
    assert container_spec(t, "n1").network_mode == "none"
    on = container_spec(t, "n1", "front", ["web", "tasks.web"])
    assert (on.network_mode, on.network_aliases) == ("front", ["web", "tasks.web"])
    t.spec.endpoint.ports.add(target_port=80, published_port=8080, publish_mode=pb.PortConfig.HOST)
    t.spec.endpoint.ports.add(target_port=53, protocol=pb.PortConfig.UDP, publish_mode=pb.PortConfig.HOST)
    assert port_specs(t) == ["8080:80/tcp", "53/udp"]
    published = container_spec(t, "n1")
    assert (published.network_mode, published.ports) == ("bridge", ["8080:80/tcp", "53/udp"])
