"""The runtime's network wiring without the kernel: instance names, spec checks, port lists and
the configured networks of stopped containers (the kernel side is covered by the e2e tests)."""
from __future__ import annotations

import pytest

from flotilla.runtime.errors import Conflict, InvalidArgument, NotFound
from flotilla.runtime.netwiring import NetWiring, configured, instance_for
from flotilla.runtime.network import PortMapping
from flotilla.runtime.spec import ContainerSpec


@pytest.fixture
def wiring(tmp_path):
    w = NetWiring(tmp_path, "flotilla-unit", "10.99.0.0/24", {"dns_upstreams": []})
    yield w
    w.close()


def record(w: NetWiring, spec: ContainerSpec, cid: str = "c" * 64, name: str = "web") -> dict:
    return {"id": cid, "name": name, "spec": spec.to_dict(), "networks": w.configure(spec)}


def test_instance_is_empty_for_the_default_parent_and_distinct_otherwise():
    assert instance_for("flotilla") == instance_for("/flotilla/") == ""
    a, b = instance_for("flotilla-test-1"), instance_for("flotilla-test-2")
    assert a != b and len(a) == 8 and a.isalnum() and a == a.lower()
    assert instance_for("flotilla-test-1") == a  # stable across agent restarts


def test_default_spec_is_on_the_bridge_network(wiring):
    assert ContainerSpec(image="x").network_mode == "bridge"
    assert wiring.configure(ContainerSpec(image="x")) == [{"network": "bridge", "ip": "", "aliases": []}]


@pytest.mark.parametrize("spec, error", [
    (ContainerSpec(image="x", ip="10.99.0.9"), "user defined networks only"),
    (ContainerSpec(image="x", network_aliases=["a"]), "only for containers in user defined networks"),
    (ContainerSpec(image="x", network_mode="none", ports=["80"]), "port publishing"),
    (ContainerSpec(image="x", network_mode="host", publish_all=True), "port publishing"),
    (ContainerSpec(image="x", ports=["80/sctp"]), "invalid protocol"),
])
def test_bad_network_specs_are_refused_at_create(wiring, spec, error):
    with pytest.raises(InvalidArgument, match=error):
        wiring.configure(spec)


def test_unknown_network_is_not_found(wiring):
    with pytest.raises(NotFound, match="network nosuch not found"):
        wiring.configure(ContainerSpec(image="x", network_mode="nosuch"))


def test_port_mappings_add_exposed_ports_only_with_publish_all():
    spec = ContainerSpec(image="x", ports=["8080:80"], publish_all=True).to_dict()
    exposed = {"80/tcp": {}, "53/udp": {}, "9000": {}}
    assert NetWiring.port_mappings(spec, exposed) == [
        PortMapping(80, "tcp", "", 8080), PortMapping(53, "udp"), PortMapping(9000, "tcp")]
    spec["publish_all"] = False
    assert NetWiring.port_mappings(spec, exposed) == [PortMapping(80, "tcp", "", 8080)]


def test_connect_and_disconnect_a_stopped_container_change_only_its_configuration(wiring):
    r = record(wiring, ContainerSpec(image="x"))
    with pytest.raises(Conflict, match="already connected"):
        wiring.connect(r, False, "bridge", "", [])
    with pytest.raises(Conflict, match="must be its only network"):
        wiring.connect(r, False, "host", "", [])
    with pytest.raises(Conflict, match="cannot be disconnected"):
        wiring.disconnect(record(wiring, ContainerSpec(image="x", network_mode="none")), False, "none")
    wiring.disconnect(r, False, "bridge")
    assert r["networks"] == []
    with pytest.raises(NotFound, match="not connected"):
        wiring.disconnect(r, False, "bridge")
    with pytest.raises(InvalidArgument, match="user defined networks only"):
        wiring.connect(r, False, "bridge", "10.99.0.5", [])
    wiring.connect(r, False, "bridge", "", [])
    assert r["networks"] == [{"network": "bridge", "ip": "", "aliases": []}]


def test_settings_of_a_stopped_container_list_its_networks_without_addresses(wiring):
    r = record(wiring, ContainerSpec(image="x", ports=["127.0.0.1:8080:80"]))
    settings = wiring.settings(r, running=False)
    assert settings["Networks"]["bridge"]["IPAddress"] == "" and settings["Networks"]["bridge"]["NetworkID"]
    assert settings["Ports"] == {"80/tcp": None} and settings["SandboxKey"] == ""


def test_records_from_before_networking_use_their_spec(wiring):
    old = {"id": "d" * 64, "name": "old", "spec": {"network_mode": "none"}}
    assert configured(old) == [{"network": "none", "ip": "", "aliases": []}]
