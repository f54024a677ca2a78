"""Rendered files, iptables rules, kernel object names and the record store (no root needed)."""

import pytest

from flotilla.runtime.network import InvalidArgument, files
from flotilla.runtime.network.firewall import Firewall, FwNetwork
from flotilla.runtime.network.portnat import NatPort, PortNat
from flotilla.runtime.network.names import IFNAMSIZ, Names
from flotilla.runtime.network.state import COMPACT_AFTER, RecordStore

HOST_RESOLV = "# comment\nnameserver 127.0.0.53\nnameserver 198.51.100.53\nsearch corp.example\noptions edns0 ndots:2\n"


def test_hosts_file_as_docker_writes_it():
    text = files.hosts("web", "198.51.100.2")
    assert text.startswith("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    assert text.endswith("198.51.100.2\tweb\n")
    assert files.hosts("web", "").count("\n") == 6


def test_resolv_conf_for_user_networks_points_to_the_embedded_server():
    text = files.resolv_conf_internal("198.51.100.1", HOST_RESOLV)
    assert "nameserver 198.51.100.1\n" in text
    assert "nameserver 127.0.0.53" not in text
    assert "search corp.example\n" in text
    assert "options edns0 ndots:0\n" in text


def test_resolv_conf_for_default_bridge_drops_loopback_servers():
    text = files.resolv_conf_default(HOST_RESOLV, "198.51.100.1")
    assert "nameserver 198.51.100.53\n" in text and "127.0.0.53" not in text
    only_loopback = files.resolv_conf_default("nameserver 127.0.0.53\n", "198.51.100.1")
    assert "nameserver 198.51.100.1\n" in only_loopback


def test_names_fit_ifnamsiz_and_never_match_another_instance():
    a, ab = Names("a"), Names("ab")
    veth = a.new_veth()
    assert len(veth) <= IFNAMSIZ and len(Names("abcdefgh").new_veth()) <= IFNAMSIZ
    assert len(Names("abcdefgh").bridge_for("f" * 64)) == IFNAMSIZ
    assert a.is_ours(veth) and not ab.is_ours(veth)
    assert not a.is_ours(ab.bridge_for("0123abcd"))
    assert Names("").default_bridge == "flotilla0"
    assert Names("x").chain("FWD") == "FLOTILLA-x-FWD"
    for bad in ("ABC", "toolong12", "a-b"):
        with pytest.raises(InvalidArgument):
            Names(bad)


def test_firewall_rules_for_a_normal_and_an_internal_network():
    fw = Firewall(Names("t1"))
    rules = fw.render([FwNetwork("flt1-aaaa", "198.51.100.0/24", False, True),
                       FwNetwork("flt1-bbbb", "203.0.113.0/24", True, True)])
    nat = "\n".join(rules["nat"])
    filt = "\n".join(rules["filter"])
    assert "-A FLOTILLA-t1-POST -s 198.51.100.0/24 ! -o flt1-aaaa -j MASQUERADE" in nat
    assert "203.0.113.0/24 ! -o flt1-bbbb -j MASQUERADE" not in nat  # internal: no way out
    assert "DNAT --to" not in nat  # published ports live in the nftables table (portnat.py)
    assert "-A FLOTILLA-t1-ISO1 -i flt1-aaaa ! -o flt1-aaaa -m conntrack ! --ctstate DNAT -j FLOTILLA-t1-ISO2" in filt
    assert "-A FLOTILLA-t1-ISO2 -o flt1-bbbb -j DROP" in filt
    assert "-A FLOTILLA-t1-FWD -i flt1-bbbb ! -o flt1-bbbb -j DROP" in filt
    assert "-A FLOTILLA-t1-IN -i flt1-aaaa -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP" in filt


def test_published_ports_render_as_map_elements_per_protocol_and_address():
    nat = PortNat(Names("t1"))
    text = nat.render([NatPort("127.0.0.1", 8080, "tcp", "198.51.100.2", 80),
                       NatPort("", 8081, "tcp", "198.51.100.2", 81),
                       NatPort("0.0.0.0", 5353, "udp", "198.51.100.3", 53)])
    assert text.startswith("table ip flotilla_t1 {")
    assert "map tcp_ip { type ipv4_addr . inet_service : ipv4_addr . inet_service ; elements = { 127.0.0.1 . 8080 : 198.51.100.2 . 80 } ; }" in text
    assert "map tcp_any { type inet_service : ipv4_addr . inet_service ; elements = { 8081 : 198.51.100.2 . 81 } ; }" in text
    # 0.0.0.0 means every address of the host, as no address at all
    assert "elements = { 5353 : 198.51.100.3 . 53 }" in text.split("map udp_any")[1].splitlines()[0]
    assert "map udp_ip { type ipv4_addr . inet_service : ipv4_addr . inet_service ; }" in text
    assert "fib daddr type local jump ports" in text
    assert Names("").nft_table == "flotilla"


def test_journal_store_keeps_the_last_whole_record(tmp_path):
    store = RecordStore(tmp_path, durable=False)
    store.write("c1", {"v": 1})
    store.write("c1", {"v": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1.log"]
    with open(tmp_path / "c1.log", "ab") as f:
        f.write(b'{"v": ')  # a torn newest line
    (tmp_path / "c2.log").write_bytes(b"")  # created, never written
    again = RecordStore(tmp_path, durable=False)
    assert again.load_all() == {"c1": {"v": 2}}
    assert not (tmp_path / "c2.log").exists()
    again.delete("c1")
    assert list(tmp_path.iterdir()) == []


def test_journal_store_compacts(tmp_path):
    store = RecordStore(tmp_path, durable=False)
    for i in range(COMPACT_AFTER + 3):
        store.write("c", {"v": i})
    assert len((tmp_path / "c.log").read_bytes().splitlines()) == 3
    assert RecordStore(tmp_path, durable=False).load_all() == {"c": {"v": COMPACT_AFTER + 2}}


def test_durable_store_replaces_atomically(tmp_path):
    store = RecordStore(tmp_path, durable=True)
    store.write("n", {"a": 1})
    store.write("n", {"a": 2})
    (tmp_path / ".x.json.tmp").write_text("partial")
    assert RecordStore(tmp_path, durable=True).load_all() == {"n": {"a": 2}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.json"]


def test_network_errors_are_the_runtime_hierarchy():
    """The agent maps runtime errors to gRPC codes: network errors must be caught by the same classes."""
    from flotilla.runtime import errors
    from flotilla.runtime import network

    assert network.NotFound is errors.NotFound and network.Conflict is errors.Conflict
    assert network.InvalidArgument is errors.InvalidArgument
    assert issubclass(network.NetworkError, errors.RuntimeFault)
