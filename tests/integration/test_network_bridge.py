"""Container networking on the real kernel: namespaces play containers and another machine
(and, at the end, real containers started by the shim).

Every kernel object carries the test's `unique` suffix (the manager's instance); subnets are
picked at random from 10.128.0.0/9 and the "other machine" gets a random /30 of
198.51.100.0/24 or 203.0.113.0/24, each checked against the host's routes, so concurrent runs do
not clash. Traffic only goes to addresses inside namespaces the test created (and the host's
own addresses on links the test created). After each test nothing of the instance may remain:
no link, netns, netns directory, iptables rule or chain.
"""
from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from flotilla.runtime import shim
from flotilla.runtime.network import Conflict, InvalidArgument, NetworkManager, NotFound, parse_port_spec
from flotilla.runtime.network import netlink
from flotilla.runtime.network.dns import build_answer, parse_query
from flotilla.runtime.network.names import Names
from flotilla.runtime.shim import BindMount, ShimConfig

pytestmark = pytest.mark.root
BUSYBOX = "/bin/busybox"


# ----------------------------------------------------------------------------- helpers

def host_routes() -> list[ipaddress.IPv4Network]:
    with IPRoute() as ipr:
        return [ipaddress.ip_network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")
                for r in ipr.get_routes(family=2, table=254) if r.get_attr("RTA_DST") and r["dst_len"]]


def free_subnet(prefixlen: int, within: list[str]) -> str:
    taken = host_routes()
    for _ in range(200):
        space = ipaddress.ip_network(random.choice(within))
        offset = random.randrange(2 ** (prefixlen - space.prefixlen)) << (32 - prefixlen)
        cand = ipaddress.ip_network((int(space.network_address) + offset, prefixlen))
        if not any(cand.overlaps(t) for t in taken):
            return str(cand)
    raise RuntimeError("no free test subnet")


def ten(prefixlen: int = 24) -> str:
    return free_subnet(prefixlen, ["10.128.0.0/9"])


def in_ns(path: str, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={path}", *args], capture_output=True, text=True, timeout=timeout)


def wait_listening(ip: str, port: int) -> None:
    """Poll from the host (host -> container is never forwarded or filtered) until a server is up."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((ip, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def fetch(ip: str, port: int) -> str:
    with socket.create_connection((ip, port), timeout=5) as s:
        s.settimeout(5)
        data = b""
        while chunk := s.recv(100):
            data += chunk
        return data.decode()


def nslookup(netns: str, name: str, server: str) -> list[str]:
    out = in_ns(netns, BUSYBOX, "nslookup", name, server).stdout
    after = out.split("Name:", 1)[1] if "Name:" in out else ""
    return [line.split()[-1] for line in after.splitlines() if line.startswith("Address")]


def leftovers(instance: str) -> list[str]:
    names = Names(instance)
    found = []
    with IPRoute() as ipr:
        found += [f"link {link.get_attr('IFLA_IFNAME')}" for link in ipr.get_links() if names.is_ours(link.get_attr("IFLA_IFNAME"))]
    if names.netns_dir.exists():
        found.append(f"dir {names.netns_dir}")
    save = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    found += [f"iptables {line}" for line in save.splitlines() if names.chain_prefix in line]
    tables = subprocess.run(["nft", "list", "tables", "ip"], capture_output=True, text=True, check=True).stdout
    found += [f"nft {line}" for line in tables.splitlines() if line.split()[-1:] == [names.nft_table]]
    found += [f"mount {line}" for line in open("/proc/self/mountinfo") if str(names.netns_dir) in line]
    return found


def nft_table(name: str) -> str:
    """The listing of an nftables table, "" when it does not exist."""
    return subprocess.run(["nft", "list", "table", "ip", name], capture_output=True, text=True).stdout


class Env:
    """A manager on a temp root plus the processes and namespaces the test started."""

    def __init__(self, root: Path, instance: str, upstreams: list[tuple[str, int]]) -> None:
        self.root, self.instance, self.upstreams = root, instance, upstreams
        self.default_subnet = ten()
        self.procs: list[subprocess.Popen] = []
        self.nm = self.open()

    def open(self) -> NetworkManager:
        return NetworkManager(self.root, instance=self.instance, default_subnet=self.default_subnet,
                              dns_upstreams=self.upstreams)

    def reopen(self) -> NetworkManager:
        """Simulate an agent restart: drop the manager without touching the kernel."""
        self.nm.close()
        self.nm = self.open()
        return self.nm

    def container(self, cid: str, network: str = "", **kw) -> str:
        path = self.nm.prepare(cid, kw.pop("hostname", cid))
        if network:
            self.nm.connect(cid, network, **kw)
        return path

    def serve(self, netns: str, port: int, reply: str) -> None:
        """A busybox nc server inside a namespace that answers every connection with `reply`."""
        p = subprocess.Popen(["nsenter", f"--net={netns}", BUSYBOX, "nc", "-ll", "-p", str(port), "-e", BUSYBOX, "echo", reply],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)

    def cleanup(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for cid in self.nm.containers():
            self.nm.release(cid)
        for net in self.nm.networks():
            if not net.builtin:
                self.nm.remove_network(net.id)
        self.nm.close()


@pytest.fixture
def upstream():
    """A fake upstream DNS server on loopback answering every name with 203.0.113.99."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(512)
            except socket.timeout:
                continue
            q = parse_query(data)
            if q:
                sock.sendto(build_answer(q, ["203.0.113.99"]), peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield sock.getsockname()
    stop.set()
    t.join()
    sock.close()


@pytest.fixture
def env(tmp_path, unique, upstream):
    e = Env(tmp_path / "root", unique, [upstream])
    try:
        yield e
    finally:
        e.cleanup()
        assert leftovers(unique) == []


@pytest.fixture
def remote(tmp_path, unique):
    """A namespace playing another machine, linked to the host by a veth pair on a TEST-NET /30.

    Yields (netns path, the host's address on the link, the remote's address)."""
    net = ipaddress.ip_network(free_subnet(30, ["198.51.100.0/24", "203.0.113.0/24"]))
    host_ip, remote_ip = str(net.network_address + 1), str(net.network_address + 2)
    path = tmp_path / f"remote-{unique}"
    netlink.create_netns(path).close()
    host_if, peer_if = f"xh{unique}", f"xp{unique}"
    with IPRoute() as ipr:
        ipr.link("add", ifname=host_if, kind="veth", peer=peer_if)
        ipr.addr("add", index=ipr.link_lookup(ifname=host_if)[0], address=host_ip, prefixlen=30)
        ipr.link("set", index=ipr.link_lookup(ifname=host_if)[0], state="up")
        fd = os.open(path, os.O_RDONLY)
        ipr.link("set", index=ipr.link_lookup(ifname=peer_if)[0], net_ns_fd=fd)
        os.close(fd)
    with netlink.entered(path):
        inner = IPRoute()
    with inner:
        idx = inner.link_lookup(ifname=peer_if)[0]
        inner.addr("add", index=idx, address=remote_ip, prefixlen=30)
        inner.link("set", index=idx, state="up")
        inner.link("set", index=1, state="up")
    try:
        yield str(path), host_ip, remote_ip
    finally:
        with IPRoute() as ipr:
            ipr.link("del", ifname=host_if)
        netlink.delete_netns(path)


# ----------------------------------------------------------------------------- tests

def test_two_containers_reach_each_other_by_ip_and_by_name(env, unique):
    net = env.nm.create_network(f"app-{unique}", subnet=ten())
    a = env.container(f"a{unique}", net.name, name=f"alpha-{unique}")
    b = env.container(f"b{unique}", net.name, name=f"beta-{unique}", aliases=["db"])
    ip_b = env.nm.endpoints(f"b{unique}")[0].ip
    env.serve(b, 7000, "hello-from-b")
    wait_listening(ip_b, 7000)
    assert in_ns(a, BUSYBOX, "nc", "-w", "3", ip_b, "7000").stdout.strip() == "hello-from-b"
    for name in (f"beta-{unique}", "db", f"b{unique}"):
        assert nslookup(a, name, net.gateway) == [ip_b], name
    # reverse lookups of container addresses name the container
    assert f"name = beta-{unique}" in in_ns(a, BUSYBOX, "nslookup", ip_b, net.gateway).stdout
    # unknown names are forwarded to the upstream (the fake one on loopback)
    assert nslookup(a, "example.org", net.gateway) == ["203.0.113.99"]
    # the files Docker would write
    files = env.nm.container_files(f"a{unique}")
    assert f"nameserver {net.gateway}\n" in files["/etc/resolv.conf"]
    ip_a = env.nm.endpoints(f"a{unique}")[0].ip
    assert files["/etc/hosts"].endswith(f"{ip_a}\ta{unique}\n")
    assert files["/etc/hostname"] == f"a{unique}\n"


def test_interfaces_addresses_routes_and_mtu_inside(env, unique):
    net = env.nm.create_network(f"m-{unique}", subnet=ten(), options={"com.docker.network.driver.mtu": "1400"})
    other = env.nm.create_network(f"o-{unique}", subnet=ten())
    path = env.container(f"c{unique}", net.name)
    ep1 = env.nm.connect(f"c{unique}", other.name)
    with netlink.entered(path):
        ipr = IPRoute()
    with ipr:
        links = {link.get_attr("IFLA_IFNAME"): link for link in ipr.get_links()}
        assert set(links) == {"lo", "eth0", "eth1"}
        assert links["eth0"].get_attr("IFLA_MTU") == 1400
        assert links["eth1"].get_attr("IFLA_MTU") == 1500
        addrs = {a.get_attr("IFA_LABEL"): a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)}
        ep0 = env.nm.endpoints(f"c{unique}")[0]
        assert addrs == {"lo": "127.0.0.1", "eth0": ep0.ip, "eth1": ep1.ip}
        defaults = [r.get_attr("RTA_GATEWAY") for r in ipr.get_routes(family=2, table=254) if r["dst_len"] == 0]
        assert defaults == [net.gateway]  # only the first network gives the default route
    env.nm.disconnect(f"c{unique}", other.name)
    assert [e.network for e in env.nm.endpoints(f"c{unique}")] == [net.name]
    assert ep1.ip not in in_ns(path, BUSYBOX, "ip", "addr").stdout


def test_networks_are_isolated_from_each_other(env, unique):
    n1 = env.nm.create_network(f"n1-{unique}", subnet=ten())
    n2 = env.nm.create_network(f"n2-{unique}", subnet=ten())
    a = env.container(f"a{unique}", n1.name)
    env.container(f"a2{unique}", n1.name)
    b = env.container(f"b{unique}", n2.name)
    ip_a2 = env.nm.endpoints(f"a2{unique}")[0].ip
    ip_b = env.nm.endpoints(f"b{unique}")[0].ip
    assert in_ns(a, BUSYBOX, "ping", "-c", "1", "-W", "2", ip_a2).returncode == 0
    assert in_ns(a, BUSYBOX, "ping", "-c", "1", "-W", "1", ip_b).returncode != 0
    assert in_ns(b, BUSYBOX, "ping", "-c", "1", "-W", "1", ip_a2).returncode != 0
    # names of another network are not visible either (the upstream answers instead)
    assert nslookup(a, f"b{unique}", n1.gateway) == ["203.0.113.99"]
    # a port B publishes is reachable from A through the host, B's own address is not
    (m,) = env.nm.publish(f"b{unique}", parse_port_spec("0:80"))
    env.serve(b, 80, "published")
    wait_listening(ip_b, 80)
    assert in_ns(a, BUSYBOX, "nc", "-w", "3", n1.gateway, str(m.host_port)).stdout.strip() == "published"
    assert in_ns(a, BUSYBOX, "nc", "-w", "1", ip_b, "80").stdout.strip() == ""


def test_published_port_from_host_localhost_other_machine_and_hairpin(env, unique, remote):
    remote_ns, host_ip, _remote_ip = remote
    net = env.nm.create_network(f"web-{unique}", subnet=ten())
    web = env.container(f"w{unique}", net.name)
    client = env.container(f"c{unique}", net.name)
    (m,) = env.nm.publish(f"w{unique}", parse_port_spec("0:80"))
    assert m.host_port > 0
    ip = env.nm.endpoints(f"w{unique}")[0].ip
    env.serve(web, 80, "pong")
    wait_listening(ip, 80)
    assert fetch("127.0.0.1", m.host_port).strip() == "pong"
    assert fetch(host_ip, m.host_port).strip() == "pong"
    assert in_ns(remote_ns, BUSYBOX, "nc", "-w", "3", host_ip, str(m.host_port)).stdout.strip() == "pong"
    # hairpin: a container on the same bridge through the host's address, and the server itself
    assert in_ns(client, BUSYBOX, "nc", "-w", "3", host_ip, str(m.host_port)).stdout.strip() == "pong"
    assert in_ns(web, BUSYBOX, "nc", "-w", "3", host_ip, str(m.host_port)).stdout.strip() == "pong"
    # the other machine cannot reach the container's address directly (no route leak through the host)
    subprocess.run(["nsenter", f"--net={remote_ns}", BUSYBOX, "ip", "route", "add", net.subnet, "via", host_ip], check=True)
    assert in_ns(remote_ns, BUSYBOX, "nc", "-w", "1", ip, "80").stdout.strip() == ""
    # the port is held: publishing it again fails, for this container or another
    with pytest.raises(Conflict, match="already allocated"):
        env.nm.publish(f"c{unique}", [m])
    assert env.nm.ports(f"w{unique}") == [m]
    table = Names(unique).nft_table
    assert f"{m.host_port} : {ip} . 80" in nft_table(table)
    env.nm.release(f"w{unique}")
    assert f"{m.host_port} : " not in nft_table(table)
    with socket.socket() as s:  # released: the port is free again
        s.bind(("0.0.0.0", m.host_port))


UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(100)
    s.sendto(b"echo-" + data, peer)
"""


def test_published_udp_port_from_localhost_and_other_machine(env, unique, remote):
    remote_ns, host_ip, _remote_ip = remote
    net = env.nm.create_network(f"u-{unique}", subnet=ten())
    path = env.container(f"u{unique}", net.name)
    (m,) = env.nm.publish(f"u{unique}", parse_port_spec("0:5353/udp"))
    server = subprocess.Popen(["nsenter", f"--net={path}", sys.executable, "-c", UDP_ECHO], stdout=subprocess.PIPE, text=True)
    env.procs.append(server)
    assert server.stdout.readline().strip() == "ready"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(5)
        c.sendto(b"one", ("127.0.0.1", m.host_port))
        assert c.recvfrom(100)[0] == b"echo-one"
    out = in_ns(remote_ns, sys.executable, "-c",
                "import socket; c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5); "
                f"c.sendto(b'two', ('{host_ip}', {m.host_port})); print(c.recvfrom(100)[0].decode())")
    assert out.stdout.strip() == "echo-two", out.stderr


PEER_ECHO = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8081))
s.listen(4)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(peer[0].encode() + b"\\n")
    c.close()
"""


def test_outbound_traffic_is_masqueraded_and_internal_network_has_no_way_out(env, unique, remote):
    remote_ns, host_ip, remote_ip = remote
    server = subprocess.Popen(["nsenter", f"--net={remote_ns}", sys.executable, "-c", PEER_ECHO], stdout=subprocess.PIPE, text=True)
    env.procs.append(server)
    assert server.stdout.readline().strip() == "ready"
    out_net = env.nm.create_network(f"out-{unique}", subnet=ten())
    o = env.container(f"o{unique}", out_net.name)
    # the other machine sees the host's address, not the container's
    assert in_ns(o, BUSYBOX, "nc", "-w", "3", remote_ip, "8081").stdout.strip() == host_ip
    net = env.nm.create_network(f"int-{unique}", subnet=ten(), internal=True)
    a = env.container(f"a{unique}", net.name, name="one")
    env.container(f"b{unique}", net.name, name="two")
    routes = in_ns(a, BUSYBOX, "ip", "route").stdout
    assert "default" not in routes
    out = in_ns(a, BUSYBOX, "nc", "-w", "1", remote_ip, "80")
    assert out.returncode != 0 and "unreachable" in out.stderr.lower()
    # names still resolve; other names are not forwarded out
    assert nslookup(a, "two", net.gateway) == [env.nm.endpoints(f"b{unique}")[0].ip]
    assert nslookup(a, "example.org", net.gateway) == []
    with pytest.raises(InvalidArgument, match="internal"):
        env.nm.publish(f"a{unique}", parse_port_spec("80"))


def test_container_cannot_reach_host_loopback_services_despite_route_localnet(env, unique):
    """route_localnet on the bridge (for 127.0.0.1 published ports) must not open the host's
    loopback to a container that forges 127.x destinations (CVE-2020-8558)."""
    net = env.nm.create_network(f"l-{unique}", subnet=ten())
    c = env.container(f"c{unique}", net.name)
    env.nm.publish(f"c{unique}", parse_port_spec("127.0.0.1::80"))  # the case that needs route_localnet
    loopback = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    with socket.socket() as host_service:
        host_service.bind((loopback, 0))  # the host's lo holds all of 127/8
        host_service.listen(1)
        port = host_service.getsockname()[1]
        # Inside the container: stop treating 127/8 (except its own 127.0.0.1) as local and route
        # it to the host, as an attacker with CAP_NET_ADMIN in its namespace could.
        forge = ("ip route del table local 127.0.0.0/8 dev lo && "
                 "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet && "
                 f"ip route add 127.0.0.0/8 via {net.gateway} dev eth0 && "
                 f"{BUSYBOX} nc -w 2 {loopback} {port} </dev/null; echo rc=$?")
        out = in_ns(c, "sh", "-c", forge)
        assert out.stdout.strip() == "rc=1", out  # the routes were made; only the connection failed
        host_service.settimeout(0.5)
        with pytest.raises(socket.timeout):
            host_service.accept()


def test_ipam_exhaustion_reuse_and_static_addresses(env, unique):
    net = env.nm.create_network(f"small-{unique}", subnet=ten(29))  # 5 container addresses
    ids = [f"c{i}{unique}" for i in range(5)]
    for cid in ids:
        env.container(cid, net.name)
    ips = [env.nm.endpoints(cid)[0].ip for cid in ids]
    assert len(set(ips)) == 5
    env.nm.prepare(f"x{unique}", "x")
    with pytest.raises(Conflict, match=f"no available IPv4 addresses on network small-{unique}"):
        env.nm.connect(f"x{unique}", net.name)
    assert env.nm.endpoints(f"x{unique}") == []  # nothing half-created
    with IPRoute() as ipr:  # no veth was left behind by the failed connect
        assert sum(env.nm.names.is_our_veth(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()) == 5
    env.nm.release(ids[2])
    assert env.nm.connect(f"x{unique}", net.name).ip == ips[2]
    env.nm.prepare(f"s{unique}", "s")
    with pytest.raises(Conflict, match="already in use"):
        env.nm.connect(f"s{unique}", net.name, ip=ips[0])


def test_state_survives_a_restart_and_recover_cleans_dead_containers(env, unique):
    net = env.nm.create_network(f"p-{unique}", subnet=ten())
    a = env.container(f"a{unique}", net.name, name="a")
    env.container(f"b{unique}", net.name, name="b")
    (pub,) = env.nm.publish(f"a{unique}", parse_port_spec("127.0.0.1::80"))
    ep_a, ep_b = env.nm.endpoints(f"a{unique}")[0], env.nm.endpoints(f"b{unique}")[0]
    nm = env.reopen()
    assert nm.network(net.id[:10]).name == net.name
    assert nm.endpoints(f"a{unique}") == [ep_a]
    nm.recover(live_ids=[f"a{unique}"])  # b died while the agent was down
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=ep_b.host_ifname)
        assert ipr.link_lookup(ifname=ep_a.host_ifname)
    assert not Path(nm.names.netns_path(f"b{unique}")).exists()
    assert f"b{unique}" not in nm.containers()
    # a new container never gets a live address; the freed one may come back later
    env.container(f"c{unique}", net.name)
    assert nm.endpoints(f"c{unique}")[0].ip != ep_a.ip
    # the published port is held again after recover, and DNS answers again
    with pytest.raises(Conflict):
        nm.publish(f"c{unique}", [pub])
    assert nslookup(a, f"c{unique}", net.gateway) == [nm.endpoints(f"c{unique}")[0].ip]


def test_recover_after_kill_9_in_the_middle_of_connect(env, unique, tmp_path):
    net = env.nm.create_network(f"k-{unique}", subnet=ten())
    env.nm.close()
    # A separate agent process that is killed (SIGKILL) right after the veth pair was created,
    # before the address was configured inside: the worst moment of connect.
    script = textwrap.dedent(f"""
        import os, signal
        from flotilla.runtime.network import NetworkManager, bridge
        nm = NetworkManager({str(env.root)!r}, instance={unique!r}, default_subnet={env.default_subnet!r}, dns_upstreams=[])
        nm.prepare("live{unique}", "live")
        nm.prepare("dead{unique}", "dead")
        bridge.set_hairpin = lambda name: os.kill(os.getpid(), signal.SIGKILL)
        nm.connect("live{unique}", {net.name!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    nm = env.open()
    env.nm = nm
    nm.recover(live_ids=[f"live{unique}"])
    assert f"dead{unique}" not in nm.containers()
    (ep,) = nm.endpoints(f"live{unique}")
    out = in_ns(str(nm.names.netns_path(f"live{unique}")), BUSYBOX, "ip", "addr", "show", "eth0").stdout
    assert f"{ep.ip}/" in out and "UP" in out
    assert in_ns(str(nm.names.netns_path(f"live{unique}")), BUSYBOX, "ping", "-c", "1", "-W", "2", net.gateway).returncode == 0


def nat_elements(table: str) -> list[tuple[int, str, int]]:
    """(host port, container ip, container port) of every DNAT element in the table."""
    return sorted((int(h), ip, int(c)) for h, ip, c in re.findall(r"(\d+) : (\d+\.\d+\.\d+\.\d+) \. (\d+)", nft_table(table)))


@pytest.mark.parametrize("point", ["publish", "release"])
def test_recover_after_kill_9_while_publishing_or_releasing_ports(env, unique, point):
    """kill -9 between the record and the DNAT element (publish) or between the element and the
    record (release): after recover the table holds exactly the live containers' ports, once."""
    net = env.nm.create_network(f"kp-{unique}", subnet=ten())
    env.nm.close()
    kill = {"publish": "portnat.PortNat.add = die",
            "release": "netlink.delete_netns = die"}[point]
    script = textwrap.dedent(f"""
        import os, signal
        from flotilla.runtime.network import NetworkManager, netlink, parse_port_spec, portnat
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        nm = NetworkManager({str(env.root)!r}, instance={unique!r}, default_subnet={env.default_subnet!r}, dns_upstreams=[])
        for c in ("a", "b"):
            nm.prepare(c + {unique!r}, c)
            nm.connect(c + {unique!r}, {net.name!r})
        nm.publish("a{unique}", parse_port_spec("127.0.0.1::80") + parse_port_spec("0:81/udp"))
        if {point!r} == "release":
            nm.publish("b{unique}", parse_port_spec("0:80"))
        {kill}
        if {point!r} == "publish":
            nm.publish("b{unique}", parse_port_spec("0:80"))
        else:
            nm.release("b{unique}")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    table = Names(unique).nft_table
    nm = env.open()
    env.nm = nm
    live = [f"a{unique}", f"b{unique}"] if point == "publish" else [f"a{unique}"]
    nm.recover(live_ids=live)
    nm.recover(live_ids=live)  # a second agent restart changes nothing
    want = sorted((m.host_port, nm.endpoints(cid)[0].ip, m.container_port) for cid in live for m in nm.ports(cid))
    assert len(want) == (3 if point == "publish" else 2)
    assert nat_elements(table) == want
    # the port answers through the rebuilt table
    (tcp,) = [m for m in nm.ports(f"a{unique}") if m.proto == "tcp"]
    env.serve(str(nm.names.netns_path(f"a{unique}")), 80, "after-crash")
    wait_listening(nm.endpoints(f"a{unique}")[0].ip, 80)
    assert fetch("127.0.0.1", tcp.host_port).strip() == "after-crash"
    for cid in live:
        nm.release(cid)
    assert nat_elements(table) == [] and nft_table(table) == ""


def test_recover_deletes_orphans_of_its_instance_only(env, unique):
    env.nm.create_network(f"o-{unique}", subnet=ten())
    orphan = env.nm.names.new_veth()
    foreign = Names(unique[:7]).new_veth()  # another instance's name: never touched
    with IPRoute() as ipr:
        ipr.link("add", ifname=orphan, kind="veth", peer=f"op{unique}")
        ipr.link("add", ifname=foreign, kind="veth", peer=f"fp{unique}")
    try:
        env.nm.names.netns_dir.mkdir(parents=True, exist_ok=True)
        netlink.create_netns(env.nm.names.netns_path("stray")).close()
        env.nm.recover(live_ids=[])
        with IPRoute() as ipr:
            assert not ipr.link_lookup(ifname=orphan)
            assert ipr.link_lookup(ifname=foreign)
        assert not env.nm.names.netns_path("stray").exists()
    finally:
        with IPRoute() as ipr:
            for name in (orphan, foreign):
                if ipr.link_lookup(ifname=name):
                    ipr.link("del", ifname=name)


def test_default_bridge_subnet_overlapping_a_host_route_is_refused(tmp_path, unique, upstream):
    subnet = ipaddress.ip_network(ten())
    dummy = f"dm{unique}"  # a host interface with that subnet (a veth: no dummy driver here)
    with IPRoute() as ipr:
        ipr.link("add", ifname=dummy, kind="veth", peer=f"dp{unique}")
        idx = ipr.link_lookup(ifname=dummy)[0]
        ipr.addr("add", index=idx, address=str(subnet.network_address + 9), prefixlen=subnet.prefixlen)
        ipr.link("set", index=idx, state="up")
    nm = NetworkManager(tmp_path / "root", instance=unique, default_subnet=str(subnet), dns_upstreams=[upstream])
    try:
        nm.prepare(f"c{unique}", "c")
        with pytest.raises(Conflict, match=f"default bridge subnet {subnet} overlaps {subnet} of interface {dummy}"):
            nm.connect(f"c{unique}", "bridge")
        assert nm.endpoints(f"c{unique}") == []
    finally:
        nm.release(f"c{unique}")
        nm.close()
        with IPRoute() as ipr:
            ipr.link("del", ifname=dummy)
    assert leftovers(unique) == []


def test_recover_deletes_the_dnat_chain_of_an_older_version(env, unique):
    """Published ports were iptables DNAT rules before: an upgraded agent removes them."""
    chain = f"FLOTILLA-{unique}-DNAT"
    jump = f"-m addrtype --dst-type LOCAL -j {chain}"
    subprocess.run(["iptables-restore", "-w", "--noflush"], check=True, text=True, input=(
        f"*nat\n:{chain} - [0:0]\n-A {chain} -p tcp -m tcp --dport 1 -j DNAT --to-destination 10.0.0.1:1\n"
        f"-A PREROUTING {jump}\n-A OUTPUT {jump}\nCOMMIT\n"))
    env.nm.create_network(f"lg-{unique}", subnet=ten())
    env.nm.recover(live_ids=[])
    assert chain not in subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout


def test_custom_bridge_name(env, unique):
    net = env.nm.create_network(f"cb-{unique}", subnet=ten(), options={"com.docker.network.bridge.name": f"cb{unique}"})
    assert net.bridge == f"cb{unique}"
    path = env.container(f"c{unique}", net.name)
    assert in_ns(path, BUSYBOX, "ping", "-c", "1", "-W", "2", net.gateway).returncode == 0
    env.nm.release(f"c{unique}")
    env.nm.remove_network(net.name)
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=f"cb{unique}")


def test_default_bridge_host_and_none(env, unique):
    names = {n.name for n in env.nm.networks()}
    assert {"bridge", "host", "none"} <= names
    path = env.container(f"d{unique}", "bridge")
    default = env.nm.network("bridge")
    with IPRoute() as ipr:
        assert ipr.link_lookup(ifname=default.bridge)
    files = env.nm.container_files(f"d{unique}")
    assert files["/etc/hosts"].endswith(f"{env.nm.endpoints(f'd{unique}')[0].ip}\td{unique}\n")
    assert in_ns(path, BUSYBOX, "ping", "-c", "1", "-W", "2", default.gateway).returncode == 0
    env.nm.release(f"d{unique}")
    with IPRoute() as ipr:  # the default bridge exists only while a container uses it
        assert not ipr.link_lookup(ifname=default.bridge)
    none = env.container(f"n{unique}", "none")
    assert in_ns(none, BUSYBOX, "ip", "-o", "link").stdout.count("\n") == 1  # lo only
    with pytest.raises(Conflict, match="only network"):
        env.nm.connect(f"n{unique}", "bridge")
    env.nm.connect(f"h{unique}", "host")
    assert env.nm.container_files(f"h{unique}")["/etc/hostname"] == socket.gethostname() + "\n"
    with pytest.raises(Conflict):
        env.nm.remove_network("host")


def test_bad_requests_fail_cleanly(env, unique):
    sub = ten()
    net = env.nm.create_network(f"x-{unique}", subnet=sub)
    with pytest.raises(Conflict, match="already exists"):
        env.nm.create_network(f"x-{unique}", subnet=ten())
    with pytest.raises(Conflict, match="overlaps"):
        env.nm.create_network(f"y-{unique}", subnet=sub)
    with pytest.raises(InvalidArgument, match="unknown network option"):
        env.nm.create_network(f"y-{unique}", subnet=ten(), options={"com.example.bogus": "1"})
    with pytest.raises(InvalidArgument, match="MTU"):
        env.nm.create_network(f"y-{unique}", subnet=ten(), options={"com.docker.network.driver.mtu": "big"})
    with pytest.raises(Conflict, match="already exists on the host"):
        env.nm.create_network(f"y-{unique}", subnet=ten(), options={"com.docker.network.bridge.name": "lo"})
    with pytest.raises(NotFound):
        env.nm.network(f"nope-{unique}")
    with pytest.raises(NotFound, match="prepare"):
        env.nm.connect(f"ghost{unique}", net.name)
    env.container(f"c{unique}", net.name)
    with pytest.raises(Conflict, match="active endpoints"):
        env.nm.remove_network(net.name)
    with pytest.raises(Conflict, match="already connected"):
        env.nm.connect(f"c{unique}", net.name)
    with pytest.raises(InvalidArgument):
        env.nm.prepare("../etc", "x")
    env.nm.release(f"c{unique}")
    env.nm.release(f"c{unique}")  # idempotent
    env.nm.remove_network(net.name)
    assert leftovers(unique) == []  # last network gone: no chain, no bridge


def test_two_instances_on_one_host_never_touch_each_other(env, unique, tmp_path):
    other_instance = unique[::-1]
    other = Env(tmp_path / "other-root", other_instance, [])
    try:
        mine = env.nm.create_network(f"m-{unique}", subnet=ten())
        theirs = other.nm.create_network(f"t-{unique}", subnet=ten())
        a = env.container(f"a{unique}", mine.name)
        b = other.container(f"b{unique}", theirs.name)
        env.nm.release(f"a{unique}")
        env.nm.remove_network(mine.name)
        env.nm.recover(live_ids=[])  # the orphan scan of one instance spares the other's objects
        assert leftovers(unique) == []
        assert leftovers(other_instance) != []
        assert in_ns(b, BUSYBOX, "ping", "-c", "1", "-W", "2", theirs.gateway).returncode == 0
        assert not Path(a).exists()
    finally:
        other.cleanup()
    assert leftovers(other_instance) == []


def test_concurrent_connects_get_distinct_addresses(env, unique):
    net = env.nm.create_network(f"c-{unique}", subnet=ten())
    ids = [f"t{i}{unique}" for i in range(8)]
    errors: list[BaseException] = []

    def wire(cid: str) -> None:
        try:
            env.container(cid, net.name)
        except BaseException as e:  # collected and re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=wire, args=(cid,)) for cid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ips = [env.nm.endpoints(cid)[0].ip for cid in ids]
    assert len(set(ips)) == len(ids)
    first = env.nm.names.netns_path(ids[0])
    for ip in ips[1:]:
        assert in_ns(str(first), BUSYBOX, "ping", "-c", "1", "-W", "2", ip).returncode == 0


# ----------------------------------------------------------------------------- with the shim
# The integration surface end to end: real containers started by the shim join the namespaces
# NetworkManager prepared (`netns=`), with its /etc files bind-mounted; A finds B by name
# through /etc/resolv.conf (the embedded DNS server on the gateway) and talks to it.

def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def start(nm: NetworkManager, tmp: Path, lower: Path, cid: str, args: list[str]) -> shim.ShimProcess:
    """What the runtime will do: bundle, /etc files from the network manager, netns= from prepare."""
    bundle = tmp / f"bundle-{cid}"
    for d in ("upper", "work", "rootfs", "exec"):
        (bundle / d).mkdir(parents=True)
    mounts = []
    for dest, text in nm.container_files(cid).items():
        src = bundle / Path(dest).name
        src.write_text(text)
        mounts.append(BindMount(str(src), dest))
    netns = str(nm.names.netns_path(cid))
    ShimConfig(args=args, env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], hostname=nm.endpoints(cid)[0].name or cid,
               lowerdir=[str(lower)], upperdir=str(bundle / "upper"), workdir=str(bundle / "work"),
               rootfs=str(bundle / "rootfs"), log=str(bundle / "log.json"), mounts=mounts, netns=netns,
               namespaces=[ns for ns in shim.ALL_NAMESPACES if ns != "net"]).write(bundle / "shim.conf")
    return shim.run(bundle)


def log_text(tmp: Path, cid: str) -> str:
    path = tmp / f"bundle-{cid}" / "log.json"
    return "".join(json.loads(line)["log"] for line in path.read_text().splitlines()) if path.exists() else ""


def test_containers_from_the_shim_find_each_other_by_name(tmp_path, unique, busybox_rootfs):
    nm = NetworkManager(tmp_path / "root", instance=unique, default_subnet=ten(), dns_upstreams=[])
    procs: list[shim.ShimProcess] = []
    try:
        net = nm.create_network(f"app-{unique}", subnet=ten())
        for cid, name in ((f"b{unique}", "beta"), (f"a{unique}", "alpha")):
            nm.prepare(cid, name)
            nm.connect(cid, net.name, name=name)
        ip_b = nm.endpoints(f"b{unique}")[0].ip
        procs.append(start(nm, tmp_path, busybox_rootfs, f"b{unique}", ["nc", "-ll", "-p", "80", "-e", "echo", "hi-from-beta"]))
        script = ("cat /etc/hostname; grep alpha /etc/hosts; "
                  "ip=$(nslookup beta | sed -n 's/^Address: *//p' | tail -n1); echo resolved=$ip; "
                  "for i in 1 2 3 4 5 6 7 8 9 10; do out=$(nc -w 2 $ip 80) && break; sleep 0.2; done; echo got=$out")
        a = start(nm, tmp_path, busybox_rootfs, f"a{unique}", ["sh", "-c", script])
        procs.append(a)
        status = a.wait(timeout=60)
        out = log_text(tmp_path, f"a{unique}")
        assert status.code == 0, out
        ip_a = nm.endpoints(f"a{unique}")[0].ip
        assert out.splitlines()[:2] == ["alpha", f"{ip_a}\talpha"]
        assert f"resolved={ip_b}" in out
        assert "got=hi-from-beta" in out
    finally:
        for p in procs:
            if _alive(p.shim_pid):
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(p.shim_pid) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.01)
        for cid in nm.containers():
            nm.release(cid)
        for n in nm.networks():
            if not n.builtin:
                nm.remove_network(n.id)
        nm.close()
    assert leftovers(unique) == []
    assert not [line for line in open("/proc/self/mountinfo") if unique in line]
    assert not [p.shim_pid for p in procs if _alive(p.shim_pid)]
