"""Benchmark of Flotilla's container networking against the kernel's own limit.

Not a test: it prints numbers and ratios. In one run it builds

- with Flotilla: a bridge network with two containers (namespaces wired by NetworkManager) and
  a port of one published on the host;
- by hand with `ip` commands: the same topology (bridge, two veth pairs, two namespaces), no NAT,
  which is what the kernel does without any orchestrator in the way;

and measures, on each path, iperf3 throughput and the round-trip latency of a TCP
request/response loop (1 byte each way), plus the time NetworkManager takes to wire a
container's network (`prepare` + `connect`) next to the same wiring done with `ip` commands.

Paths: container -> container on one bridge (Flotilla vs hand-built); host -> container through
the published port on 127.0.0.1 (DNAT + route_localnet, Flotilla's choice instead of a userland
proxy) vs host -> container's address directly (hand-built, no NAT).

All traffic stays inside namespaces this script creates (and the host side of its own bridges);
every object is removed at the end, also on error or Ctrl-C. Needs root, iperf3 and busybox.

    .venv/bin/python bench/network.py [--seconds 2] [--rounds 3] [--wire-count 50] [--rr-count 3000]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pyroute2 import IPRoute

from flotilla.runtime.network import NetworkManager, parse_port_spec

RR_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (b := c.recv(1)):
        c.sendall(b)
    c.close()
"""

RR_CLIENT = r"""
import socket, sys, time, json
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((ip, port)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(200):
    c.sendall(b"x"); c.recv(1)
out = []
for _ in range(n):
    t = time.perf_counter_ns(); c.sendall(b"x"); c.recv(1); out.append(time.perf_counter_ns() - t)
print(json.dumps(out))
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check)


def free_subnets(n: int) -> list[str]:
    with IPRoute() as ipr:
        taken = [ipaddress.ip_network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")
                 for r in ipr.get_routes(family=2) if r.get_attr("RTA_DST") and r["dst_len"]]
    out: list[ipaddress.IPv4Network] = []
    while len(out) < n:
        cand = ipaddress.ip_network(f"10.{random.randrange(128, 255)}.{random.randrange(256)}.0/24")
        if not any(cand.overlaps(t) for t in taken + out):
            out.append(cand)
    return [str(s) for s in out]


def ns_cmd(netns: str) -> list[str]:
    """Prefix that runs a command in a namespace given by path (Flotilla) or name (ip netns)."""
    return ["nsenter", f"--net={netns}"] if netns.startswith("/") else ["ip", "netns", "exec", netns]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = uuid.uuid4().hex[:6]
        self.procs: list[subprocess.Popen] = []
        self.hand_links: list[str] = []
        self.hand_ns: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="flotilla-netbench-"))
        self.nm = NetworkManager(self.tmp, instance=f"b{self.tag}", default_subnet=free_subnets(1)[0], dns_upstreams=[])

    # ---------------------------------------------------------------- servers and clients
    def start(self, netns: str | None, *cmd: str) -> subprocess.Popen:
        p = subprocess.Popen((ns_cmd(netns) if netns else []) + list(cmd), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        return p

    def iperf(self, server_ns: str, client_ns: str | None, ip: str, port: int, server_port: int) -> float:
        srv = self.start(server_ns, "iperf3", "-s", "-1", "-p", str(server_port))
        time.sleep(0.3)
        cmd = (ns_cmd(client_ns) if client_ns else []) + ["iperf3", "-c", ip, "-p", str(port), "-t", str(self.args.seconds), "-J"]
        out = json.loads(sh(*cmd).stdout)
        srv.wait(timeout=10)
        return out["end"]["sum_received"]["bits_per_second"] / 1e9

    def rr(self, server_ns: str, client_ns: str | None, ip: str, port: int, server_port: int) -> tuple[float, float]:
        srv = self.start(server_ns, sys.executable, "-c", RR_SERVER, str(server_port))
        assert srv.stdout is not None and srv.stdout.readline().startswith("ready")
        cmd = (ns_cmd(client_ns) if client_ns else []) + [sys.executable, "-c", RR_CLIENT, ip, str(port), str(self.args.rr_count)]
        samples = json.loads(sh(*cmd).stdout)
        srv.kill()
        srv.wait()
        return statistics.median(samples) / 1e3, sorted(samples)[int(len(samples) * 0.99)] / 1e3

    # ---------------------------------------------------------------- topologies
    def flotilla(self) -> dict:
        sub = free_subnets(1)[0]
        net = self.nm.create_network(f"bench{self.tag}", subnet=sub)
        a = self.nm.prepare(f"a{self.tag}", "a")
        self.nm.connect(f"a{self.tag}", net.name)
        b = self.nm.prepare(f"b{self.tag}", "b")
        ip_b = self.nm.connect(f"b{self.tag}", net.name).ip
        iperf_pub, rr_pub = self.nm.publish(f"b{self.tag}", parse_port_spec("127.0.0.1::5201") + parse_port_spec("127.0.0.1::7000"))
        return {"a": a, "b": b, "ip_b": ip_b, "iperf_pub": iperf_pub.host_port, "rr_pub": rr_pub.host_port}

    def hand(self) -> dict:
        sub = ipaddress.ip_network(free_subnets(1)[0])
        gw, ip_a, ip_b = (str(sub.network_address + i) for i in (1, 2, 3))
        br = f"hb{self.tag}"
        sh("ip", "link", "add", br, "type", "bridge")
        self.hand_links.append(br)
        sh("ip", "addr", "add", f"{gw}/24", "dev", br)
        sh("ip", "link", "set", br, "up")
        for name, ip in (("a", ip_a), ("b", ip_b)):
            ns = f"hand{self.tag}{name}"
            sh("ip", "netns", "add", ns)
            self.hand_ns.append(ns)
            host_if = f"hv{self.tag}{name}"
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.hand_links.append(host_if)
            sh("ip", "link", "set", host_if, "master", br, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", gw)
        return {"a": f"hand{self.tag}a", "b": f"hand{self.tag}b", "ip_b": ip_b}

    def wiring(self) -> tuple[list[float], list[float]]:
        """ms per container: NetworkManager prepare+connect, and the same with `ip` commands."""
        sub = free_subnets(1)[0]
        net = self.nm.create_network(f"wire{self.tag}", subnet=sub)
        ours, theirs = [], []
        for i in range(self.args.wire_count):
            cid = f"w{i}{self.tag}"
            t = time.perf_counter()
            self.nm.prepare(cid, cid)
            self.nm.connect(cid, net.name)
            ours.append((time.perf_counter() - t) * 1e3)
        for i in range(self.args.wire_count):
            self.nm.release(f"w{i}{self.tag}")
        self.nm.remove_network(net.name)
        hub = ipaddress.ip_network(free_subnets(1)[0])
        br = f"hw{self.tag}"
        sh("ip", "link", "add", br, "type", "bridge")
        self.hand_links.append(br)
        sh("ip", "addr", "add", f"{hub.network_address + 1}/24", "dev", br)
        sh("ip", "link", "set", br, "up")
        for i in range(min(self.args.wire_count, 250)):
            ns, host_if = f"hw{self.tag}{i}", f"hx{self.tag}{i}"
            t = time.perf_counter()
            sh("ip", "netns", "add", ns)
            self.hand_ns.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.hand_links.append(host_if)
            sh("ip", "link", "set", host_if, "master", br, "up")
            sh("ip", "-n", ns, "addr", "add", f"{hub.network_address + 2 + i}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", str(hub.network_address + 1))
            theirs.append((time.perf_counter() - t) * 1e3)
        return ours, theirs

    # ---------------------------------------------------------------- run
    def run(self) -> None:
        # Wiring first, while the machine has no namespaces of ours being torn down in the kernel.
        ours, theirs = self.wiring()
        f, h = self.flotilla(), self.hand()
        paths = {
            "container->container (flotilla bridge)": (f["b"], f["a"], f["ip_b"], 5201, 7000),
            "container->container (hand-built bridge)": (h["b"], h["a"], h["ip_b"], 5201, 7000),
            "host->container via 127.0.0.1 published port (flotilla DNAT)": (f["b"], None, "127.0.0.1", f["iperf_pub"], f["rr_pub"]),
            "host->container direct (hand-built, no NAT)": (h["b"], None, h["ip_b"], 5201, 7000),
        }
        samples: dict[str, dict[str, list]] = {k: {"gbps": [], "p50": [], "p99": []} for k in paths}
        # Rounds alternate between Flotilla's path and its baseline so that load from other
        # processes on the machine hits both alike; the medians of the rounds are reported.
        for _ in range(self.args.rounds):
            for name, (srv_ns, cli_ns, ip, iperf_port, rr_port) in paths.items():
                samples[name]["gbps"].append(self.iperf(srv_ns, cli_ns, ip, iperf_port, 5201))
                p50, p99 = self.rr(srv_ns, cli_ns, ip, rr_port, 7000)
                samples[name]["p50"].append(p50)
                samples[name]["p99"].append(p99)
        res = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in samples.items()}

        print(f"{'path (median of ' + str(self.args.rounds) + ' rounds)':64} {'Gbit/s':>8} {'rtt p50 us':>11} {'rtt p99 us':>11}")
        for name, r in res.items():
            print(f"{name:64} {r['gbps']:8.2f} {r['p50']:11.1f} {r['p99']:11.1f}")
        keys = list(res)
        for ours_key, base_key in ((keys[0], keys[1]), (keys[2], keys[3])):
            o, b = res[ours_key], res[base_key]
            print(f"ratio {ours_key.split(' (')[0]:34} throughput {o['gbps'] / b['gbps']:.2f}x  "
                  f"rtt p50 {o['p50'] / b['p50']:.2f}x  (flotilla / kernel limit)")
        q = statistics.quantiles
        print(f"wiring a container (prepare+connect), {len(ours)} containers: median {statistics.median(ours):.2f} ms, "
              f"p90 {q(ours, n=10)[-1]:.2f} ms, max {max(ours):.2f} ms")
        print(f"same wiring with ip commands, {len(theirs)} containers: median {statistics.median(theirs):.2f} ms "
              f"(flotilla is {statistics.median(theirs) / statistics.median(ours):.1f}x faster)")

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for cid in self.nm.containers():
            self.nm.release(cid)
        for net in self.nm.networks():
            if not net.builtin:
                self.nm.remove_network(net.id)
        self.nm.close()
        for link in reversed(self.hand_links):
            sh("ip", "link", "del", link, check=False)
        for ns in self.hand_ns:
            sh("ip", "netns", "del", ns, check=False)
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=2, help="iperf3 duration per path and round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds")
    ap.add_argument("--wire-count", type=int, default=50, help="containers wired for the timing")
    ap.add_argument("--rr-count", type=int, default=3000, help="request/response round trips per path")
    bench = Bench(ap.parse_args())
    try:
        bench.run()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
