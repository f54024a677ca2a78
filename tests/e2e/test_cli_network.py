"""Container networking through swarmctl against a real agent (issue 4), on the real kernel.

Every test uses subnets that no host route covers and names with the test's unique suffix.
The "other machine" is a network namespace the test creates (`Outside`), joined to the host by
a veth pair in 198.51.100.0/24: no packet leaves this machine. After each test no link,
namespace, iptables rule or chain of the agent's network instance may remain.
"""
from __future__ import annotations

import ipaddress
import json
import random
import socket
import subprocess

import pytest

from cli_harness import IMAGE, agent, ctl, wait_for  # noqa: F401  (fixtures)
from flotilla.runtime.netwiring import instance_for

pytestmark = pytest.mark.root
BUSYBOX = "/bin/busybox"
ECHO = ["nc", "-ll", "-p", "7", "-e", "cat"]  # a TCP echo server on port 7


def host_routes() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    nets = []
    for line in out.splitlines():
        words = line.split()
        dst = words[1] if words and words[0] in ("local", "broadcast", "unicast") else (words or [""])[0]
        if dst[:1].isdigit():
            nets.append(ipaddress.ip_network(dst, strict=False))
    return nets


def free_subnet(prefixlen: int = 24, within: str = "10.128.0.0/9") -> str:
    """A subnet no host route overlaps (so concurrent runs of anything on this host never clash)."""
    taken = host_routes()
    space = ipaddress.ip_network(within)
    for _ in range(200):
        offset = random.randrange(2 ** (prefixlen - space.prefixlen)) << (32 - prefixlen)
        cand = ipaddress.ip_network((int(space.network_address) + offset, prefixlen))
        if not any(cand.overlaps(t) for t in taken):
            return str(cand)
    raise RuntimeError("no free test subnet")


def ours(agent) -> dict[str, list[str]]:
    """Links, namespaces, iptables lines and nftables table of the agent's network instance now on the host."""
    inst = instance_for(agent.cgroup_parent)
    links = [name for _, name in socket.if_nameindex() if name.startswith((f"fl{inst}-", f"fv{inst}-"))]
    netns_dir = f"/run/flotilla/netns-{inst}"
    namespaces = subprocess.run(["ls", netns_dir], capture_output=True, text=True).stdout.split()
    rules = [line for line in subprocess.run(["iptables-save"], capture_output=True, text=True).stdout.splitlines()
             if f"FLOTILLA-{inst}-" in line]
    table = f"flotilla_{inst}" if inst else "flotilla"  # published ports' DNAT table
    tables = [line for line in subprocess.run(["nft", "list", "tables", "ip"], capture_output=True, text=True).stdout.splitlines()
              if line.split()[-1:] == [table]]
    return {"links": links, "netns": namespaces, "iptables": rules, "nft": tables}


@pytest.fixture
def net(ctl, agent, unique):
    """`net(name, *flags)` creates a network; all are removed after the test, then nothing may remain."""
    made: list[str] = []

    def create(name: str, *flags: str) -> str:
        ctl("network", "create", *flags, name)
        made.append(name)
        return name
    yield create
    agent.cleanup()  # containers first, then the user networks
    assert not [n for n in made if f" {n} " in ctl("network", "ls").stdout]
    left = ours(agent)
    assert left == {"links": [], "netns": [], "iptables": [], "nft": []}, left


class Outside:
    """A network namespace playing another machine: 198.51.100.<k+2>/30, host side <k+1>."""

    def __init__(self, unique: str) -> None:
        self.ns = f"flt-out-{unique}"
        self.host_if, self.peer_if = f"vo{unique}", f"vp{unique}"
        base = ipaddress.ip_address("198.51.100.0") + 4 * random.randrange(64)
        self.host_ip, self.ip = str(base + 1), str(base + 2)
        self._ip("netns", "add", self.ns)
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if, "netns", self.ns)
        self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        self._ip("link", "set", self.host_if, "up")
        self.run_ok("ip", "addr", "add", f"{self.ip}/30", "dev", self.peer_if)
        self.run_ok("ip", "link", "set", self.peer_if, "up")
        self.run_ok("ip", "link", "set", "lo", "up")
        self.run_ok("ip", "route", "add", "default", "via", self.host_ip)

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def run(self, *argv: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], input=input, capture_output=True, text=True,
                              timeout=30)

    def run_ok(self, *argv: str) -> None:
        res = self.run(*argv)
        assert res.returncode == 0, res.stderr

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)  # at once (netns teardown is lazy)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def outside(unique):
    o = Outside(unique)
    yield o
    o.close()
    assert o.host_if not in {n for _, n in socket.if_nameindex()}


def ip_on(agent, ctr: str, network: str) -> str:
    return agent.inspect(ctr)["NetworkSettings"]["Networks"][network]["IPAddress"]


def echo_script(target: str, word: str) -> str:
    """Resolve `target` with the agent's DNS (nslookup), then one TCP echo exchange with it."""
    return (f"ip=$(nslookup {target} 2>/dev/null | sed -n 's/^Address: *//p' | tail -n +2 | tail -n1); "
            f"echo resolved=$ip; [ -n \"$ip\" ] || exit 3; "
            f"for i in 1 2 3 4 5 6 7 8 9 10; do out=$(echo {word} | nc -w 2 $ip 7) && [ -n \"$out\" ] && break; "
            f"sleep 0.2; done; echo got=$out")


def tcp_echo(host: str, port: int, word: bytes = b"hello") -> bytes:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(word + b"\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(100):
            data += chunk
    return data


def host_port(ctl, ctr: str, private: str = "7/tcp") -> int:
    line = ctl("port", ctr, private).stdout.strip()
    return int(line.rpartition(":")[2])


def test_containers_on_one_network_reach_each_other_by_name_and_alias(ctl, agent, net, unique):
    n = net(f"app-{unique}", "--subnet", free_subnet())
    ctl("run", "-d", "--name", f"srv-{unique}", "--network", n, "--network-alias", f"echo-{unique}", IMAGE, *ECHO)
    srv_ip = ip_on(agent, f"srv-{unique}", n)
    for target in (f"srv-{unique}", f"echo-{unique}"):
        out = ctl("run", "--rm", "--network", n, IMAGE, "sh", "-c", echo_script(target, "ping-" + unique)).stdout
        assert f"resolved={srv_ip}" in out and f"got=ping-{unique}" in out, out
    doc = json.loads(ctl("network", "inspect", n).stdout)[0]
    assert doc["Name"] == n and [c["Name"] for c in doc["Containers"].values()] == [f"srv-{unique}"]
    files = ctl("exec", f"srv-{unique}", "sh", "-c", "cat /etc/hostname /etc/hosts /etc/resolv.conf").stdout
    gateway = doc["IPAM"]["Config"][0]["Gateway"]
    assert f"{srv_ip}\t" in files and f"nameserver {gateway}" in files


def test_two_networks_are_isolated(ctl, agent, net, unique):
    a = net(f"a-{unique}", "--subnet", free_subnet())
    b = net(f"b-{unique}", "--subnet", free_subnet())
    ctl("run", "-d", "--name", f"srv-{unique}", "--network", a, IMAGE, *ECHO)
    srv_ip = ip_on(agent, f"srv-{unique}", a)
    same = ctl("run", "--rm", "--network", a, IMAGE, "sh", "-c", f"echo x | nc -w 2 {srv_ip} 7").stdout
    assert same == "x\n"
    other = ctl("run", "--rm", "--network", b, IMAGE, "sh", "-c",
                f"echo x | nc -w 2 {srv_ip} 7; echo rc=$?; nslookup srv-{unique} >/dev/null 2>&1; echo dns=$?").stdout
    assert "x\n" not in other.split("rc=")[0] and "dns=0" not in other, other
    # connected to both, a container reaches it again
    ctl("run", "-d", "--name", f"both-{unique}", "--network", b, IMAGE, "sleep", "1000")
    ctl("network", "connect", a, f"both-{unique}")
    assert ip_on(agent, f"both-{unique}", a)
    assert ctl("exec", f"both-{unique}", "sh", "-c", f"echo y | nc -w 2 {srv_ip} 7").stdout == "y\n"
    ctl("network", "disconnect", a, f"both-{unique}")
    assert a not in agent.inspect(f"both-{unique}")["NetworkSettings"]["Networks"]


def test_published_port_from_the_host_loopback_and_another_machine(ctl, agent, net, unique, outside):
    n = net(f"pub-{unique}", "--subnet", free_subnet())
    ctl("run", "-d", "--name", f"web-{unique}", "--network", n, "-p", "7", IMAGE, *ECHO)
    port = host_port(ctl, f"web-{unique}")
    assert ctl("port", f"web-{unique}").stdout == f"7/tcp -> 0.0.0.0:{port}\n"
    assert f"0.0.0.0:{port}->7/tcp" in ctl("ps").stdout
    assert agent.inspect(f"web-{unique}")["NetworkSettings"]["Ports"] == {"7/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
    wait_for(lambda: tcp_echo("127.0.0.1", port) == b"hello\n", what="the published port on 127.0.0.1")
    assert tcp_echo(outside.host_ip, port, b"local") == b"local\n"  # a host address, from the host
    res = outside.run(BUSYBOX, "nc", "-w", "3", outside.host_ip, str(port), input="remote\n")
    assert res.stdout == "remote\n", res.stderr
    # the same host port again is an error at start, and the container stays created
    res = ctl("run", "-d", "--name", f"dup-{unique}", "--network", n, "-p", f"{port}:7", IMAGE, *ECHO, check=False)
    assert res.returncode == 125 and "port is already allocated" in res.stderr
    assert agent.status(f"dup-{unique}") == "created"


def test_publish_all_exposed_ports_on_the_default_bridge(ctl, agent, net, unique):
    net(f"unused-{unique}", "--subnet", free_subnet())  # so the fixture checks the instance's leftovers too
    image = f"exposing-{unique}:latest"
    ctl("commit", "-c", "EXPOSE 7", "-c", "EXPOSE 9/udp",
        ctl("create", IMAGE, "true").stdout.strip(), image)
    try:
        ctl("run", "-d", "--name", f"all-{unique}", "-P", image, *ECHO)
        lines = ctl("port", f"all-{unique}").stdout.splitlines()
        assert sorted(line.split(" ->")[0] for line in lines) == ["7/tcp", "9/udp"]
        port = host_port(ctl, f"all-{unique}")
        wait_for(lambda: tcp_echo("127.0.0.1", port) == b"hello\n", what="the -P port")
        assert "bridge" in agent.inspect(f"all-{unique}")["NetworkSettings"]["Networks"]
    finally:
        agent.cleanup()
        ctl("rmi", image)


def test_host_and_none_networks(ctl, agent, net, unique):
    net(f"unused-{unique}", "--subnet", free_subnet())
    none = ctl("run", "--rm", "--network", "none", IMAGE, "ls", "/sys/class/net").stdout.split()
    assert none == ["lo"]
    ctl("create", "--name", f"h-{unique}", "--network", "host", IMAGE, "hostname")
    ctl("start", "-a", f"h-{unique}")
    assert ctl("logs", f"h-{unique}").stdout.strip() == socket.gethostname()
    assert list(agent.inspect(f"h-{unique}")["NetworkSettings"]["Networks"]) == ["host"]
    res = ctl("run", "--rm", "--network", "none", "-p", "80", IMAGE, "true", check=False)
    assert res.returncode == 125 and "port publishing" in res.stderr
    res = ctl("run", "--rm", "--ip", "10.1.2.3", IMAGE, "true", check=False)
    assert res.returncode == 125 and "user defined networks only" in res.stderr
    res = ctl("run", "--rm", "--network", f"nosuch-{unique}", IMAGE, "true", check=False)
    assert res.returncode == 125 and f"network nosuch-{unique} not found" in res.stderr
    names = ctl("network", "ls").stdout
    assert all(f" {n} " in names for n in ("bridge", "host", "none"))


def test_ipam_exhaustion_static_ip_and_reuse(ctl, agent, net, unique):
    subnet = ipaddress.ip_network(free_subnet(29))
    ip_range = ipaddress.ip_network((int(subnet.network_address) + 4, 30))  # .4 .5 .6 (.7 is broadcast)
    n = net(f"small-{unique}", "--subnet", str(subnet), "--ip-range", str(ip_range))
    ips = []
    for i in range(3):
        ctl("run", "-d", "--name", f"c{i}-{unique}", "--network", n, IMAGE, "sleep", "1000")
        ips.append(ip_on(agent, f"c{i}-{unique}", n))
    assert sorted(ips) == [str(subnet.network_address + k) for k in (4, 5, 6)]
    res = ctl("run", "-d", "--name", f"full-{unique}", "--network", n, IMAGE, "sleep", "1000", check=False)
    assert res.returncode == 125 and f"no available IPv4 addresses on network {n}" in res.stderr
    static = str(subnet.network_address + 2)  # outside the range, inside the subnet
    ctl("run", "-d", "--name", f"st-{unique}", "--network", n, "--ip", static, IMAGE, "sleep", "1000")
    assert ip_on(agent, f"st-{unique}", n) == static
    res = ctl("run", "-d", "--network", n, "--ip", static, IMAGE, "true", check=False)
    assert res.returncode == 125 and static in res.stderr
    ctl("rm", "-f", f"c1-{unique}")
    ctl("start", f"full-{unique}")  # the freed address is given again
    assert ip_on(agent, f"full-{unique}", n) == ips[1]
    ctl("stop", "-t", "0", f"c0-{unique}")  # a stopped container holds no address (as Docker)
    assert ip_on(agent, f"c0-{unique}", n) == ""
    res = ctl("network", "rm", n, check=False)
    assert res.returncode != 0 and "active endpoints" in res.stderr


def test_internal_network_has_no_outbound_route(ctl, agent, net, unique, outside):
    n = net(f"int-{unique}", "--internal", "--subnet", free_subnet())
    ctl("run", "-d", "--name", f"in-{unique}", "--network", n, IMAGE, *ECHO)
    srv_ip = ip_on(agent, f"in-{unique}", n)
    out = ctl("run", "--rm", "--network", n, IMAGE, "sh", "-c",
              f"ip route; ping -c 1 -W 1 {outside.ip} >/dev/null 2>&1; echo ping=$?; echo z | nc -w 2 {srv_ip} 7").stdout
    assert "default" not in out and "ping=0" not in out and out.endswith("z\n"), out
    res = ctl("run", "--rm", "--network", n, "-p", "7", IMAGE, "true", check=False)
    assert res.returncode == 125 and "internal" in res.stderr


def test_agent_restart_keeps_networking_and_leaves_no_duplicates(ctl, agent, net, unique, outside):
    n = net(f"keep-{unique}", "--subnet", free_subnet())
    ctl("run", "-d", "--name", f"srv-{unique}", "--network", n, "-p", "7", IMAGE, *ECHO)
    ctl("run", "-d", "--name", f"cli-{unique}", "--network", n, IMAGE, "sleep", "1000")
    port = host_port(ctl, f"srv-{unique}")
    wait_for(lambda: tcp_echo("127.0.0.1", port) == b"hello\n", what="the published port")
    before = ours(agent)
    for restart in (lambda: (agent.stop(), agent.start()), lambda: (agent.kill9(), agent.start())):
        restart()
        assert ours(agent) == before  # the same links, namespaces and rules: nothing twice, nothing lost
        assert tcp_echo("127.0.0.1", port) == b"hello\n"
        res = outside.run(BUSYBOX, "nc", "-w", "3", outside.host_ip, str(port), input="again\n")
        assert res.stdout == "again\n"
        out = ctl("exec", f"cli-{unique}", "sh", "-c", echo_script(f"srv-{unique}", "by-name")).stdout
        assert "got=by-name" in out, out


def test_restarts_rewire_the_container(ctl, agent, net, unique):
    """A restart policy and `restart` start the container afresh: address, name and port come back."""
    n = net(f"rs-{unique}", "--subnet", free_subnet())
    with socket.socket() as s:  # a port free right now, published explicitly so it stays the same
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # one connection per run: the server exits after each, the policy starts it again
    ctl("run", "-d", "--name", f"once-{unique}", "--restart", "always", "--network", n, "-p", f"{port}:7",
        IMAGE, "nc", "-l", "-p", "7", "-e", "cat")
    for word in (b"first", b"second"):
        wait_for(lambda: _try_echo(port, word), 20, what=f"the port to answer {word!r} after a restart")
    wait_for(lambda: agent.inspect(f"once-{unique}")["RestartCount"] >= 1, 20, what="a restart by policy")
    ctl("restart", "-t", "0", f"once-{unique}")
    wait_for(lambda: _try_echo(port, b"third"), 20, what="the port after `restart`")
    ctl("run", "-d", "--name", f"cli-{unique}", "--network", n, IMAGE, "sleep", "1000")
    wait_for(lambda: agent.status(f"once-{unique}") == "running", 20, what="the server to run again")
    out = ctl("exec", f"cli-{unique}", "sh", "-c", echo_script(f"once-{unique}", "by-name")).stdout
    assert f"resolved={ip_on(agent, f'once-{unique}', n)}" in out


def _try_echo(port: int, word: bytes) -> bool:
    try:
        return tcp_echo("127.0.0.1", port, word) == word + b"\n"
    except OSError:
        return False
