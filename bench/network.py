"""Benchmark of Flotilla's container networking against the kernel's own limit.

Not a test: it prints numbers and ratios. In one run it builds

- with Flotilla: a bridge network with two containers (namespaces wired by NetworkManager) and
  ports of one published on the host;
- by hand with `ip` commands: the same topology (bridge, two veth pairs, two namespaces), no NAT,
  which is what the kernel does without any orchestrator in the way;

and measures, on each path, iperf3 throughput and the round-trip latency of a TCP
request/response loop (1 byte each way), plus the time NetworkManager takes to wire a
container's network (`prepare` + `connect`, and what `publish` of one port adds) next to the
same wiring done with `ip` commands.

Paths and the ratios printed (goal of issue 4 in brackets):
  container -> container, Flotilla bridge / hand-built bridge                      [>= 0.95]
  host -> 127.0.0.1 published port (DNAT + route_localnet) / host -> the same
      container's address directly (no NAT)                                        [>= 0.80]
  host -> container's address, Flotilla bridge / hand-built bridge                 (the bridge alone)
  host -> 127.0.0.1 through docker-proxy / direct (Docker's userland proxy; where installed)
Fairness: both topologies live in the same host namespace, so the same sysctls apply
(bridge-nf-call-iptables, conntrack), and the script prints the link settings that change
throughput (MTU, GSO/GRO sizes, queues, qdisc) for both and says where they differ. Rounds
visit the paths in alternating order; ratios are medians of per-round ratios (each from two
measurements taken back to back), so load from other processes hits both sides alike.

All traffic stays inside namespaces this script creates (and the host side of its own bridges);
every object is removed at the end, also on error or Ctrl-C. Needs root, iperf3 and busybox.

    .venv/bin/python bench/network.py [--seconds 2] [--rounds 5] [--wire-count 50] [--rr-count 3000]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import shutil
import socket
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
        if "sum_received" not in out.get("end", {}):
            raise SystemExit(f"iperf3 to {ip}:{port} failed: {out.get('error', 'no result')}")
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:  # through docker-proxy the server may miss the final close
            srv.kill()
            srv.wait()
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
        out = {"a": a, "b": b, "ip_b": ip_b, "iperf_pub": iperf_pub.host_port, "rr_pub": rr_pub.host_port,
               "bridge": net.bridge, "veth_b": self.nm.endpoints(f"b{self.tag}")[0].host_ifname}
        if shutil.which("docker-proxy"):  # Docker's userland proxy, the alternative to DNAT for 127.0.0.1
            out["proxy_iperf"], out["proxy_rr"] = self.userland_proxy(ip_b, 5201), self.userland_proxy(ip_b, 7000)
        return out

    def userland_proxy(self, container_ip: str, container_port: int) -> int:
        """Start docker-proxy on a free 127.0.0.1 port forwarding to the container; its port."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        r, w = os.pipe()  # docker-proxy reports its start on fd 3 (kept open: dup2 before exec)
        p = subprocess.Popen(["docker-proxy", "-proto", "tcp", "-host-ip", "127.0.0.1", "-host-port", str(port),
                              "-container-ip", container_ip, "-container-port", str(container_port)],
                             pass_fds=(3, w), preexec_fn=lambda: os.dup2(w, 3),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        os.close(w)
        os.read(r, 100)
        os.close(r)
        return port

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
        return {"a": f"hand{self.tag}a", "b": f"hand{self.tag}b", "ip_b": ip_b, "bridge": br, "veth_b": f"hv{self.tag}b"}

    def wiring(self) -> dict[str, list[float]]:
        """ms per container: NetworkManager prepare+connect, the same plus `publish` of one port
        (`-p`), and the release of each; then the same wiring with `ip` commands."""
        sub = free_subnets(1)[0]
        net = self.nm.create_network(f"wire{self.tag}", subnet=sub)
        out: dict[str, list[float]] = {k: [] for k in ("connect", "connect+publish", "release", "release with port", "ip")}
        ports = parse_port_spec("80")
        for i in range(self.args.wire_count):
            for publish in (False, True):  # interleaved, so load hits both alike
                cid = f"w{i}{int(publish)}{self.tag}"
                t = time.perf_counter()
                self.nm.prepare(cid, cid)
                self.nm.connect(cid, net.name)
                if publish:
                    self.nm.publish(cid, ports)
                out["connect+publish" if publish else "connect"].append((time.perf_counter() - t) * 1e3)
        for i in range(self.args.wire_count):
            for publish in (False, True):
                t = time.perf_counter()
                self.nm.release(f"w{i}{int(publish)}{self.tag}")
                out["release with port" if publish else "release"].append((time.perf_counter() - t) * 1e3)
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
            out["ip"].append((time.perf_counter() - t) * 1e3)
        return out

    # ---------------------------------------------------------------- fairness
    @staticmethod
    def link_settings(netns: str | None, dev: str) -> dict[str, object]:
        """What changes a link's throughput: MTU, GSO/GRO limits, queues, qdisc, offload-relevant kind."""
        cmd = (["ip", "-n", netns] if netns and not netns.startswith("/") else
               (["nsenter", f"--net={netns}", "ip"] if netns else ["ip"]))
        (link,) = json.loads(sh(*cmd, "-d", "-j", "link", "show", "dev", dev).stdout)
        keys = ("mtu", "qdisc", "txqlen", "num_tx_queues", "num_rx_queues", "gso_max_size", "gso_max_segs",
                "gro_max_size", "tso_max_size", "tso_max_segs", "gro_ipv4_max_size", "gso_ipv4_max_size")
        out: dict[str, object] = {k: link.get(k) for k in keys}
        out["kind"] = link.get("linkinfo", {}).get("info_kind")
        return out

    def fairness(self, f: dict, h: dict) -> None:
        """Print the settings of both topologies that could make one faster than the other."""
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as fh:
            nf_call = fh.read().strip()
        print(f"bridge-nf-call-iptables={nf_call} (global: bridged packets of both bridges "
              f"{'traverse' if nf_call == '1' else 'skip'} iptables and conntrack alike)")
        pairs = [("bridge", (None, f["bridge"]), (None, h["bridge"])),
                 ("host end of b's veth", (None, f["veth_b"]), (None, h["veth_b"])),
                 ("b's eth0", (f["b"], "eth0"), (h["b"], "eth0")),
                 ("a's eth0", (f["a"], "eth0"), (h["a"], "eth0"))]
        same = True
        for what, fl, hd in pairs:
            a, b = self.link_settings(*fl), self.link_settings(*hd)
            diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
            if diff:
                same = False
                print(f"  differs on {what}: " + ", ".join(f"{k} flotilla={x} hand={y}" for k, (x, y) in diff.items()))
        if same:
            print("link settings (MTU, GSO/GRO sizes, queues, qdisc) identical on both paths")

    # ---------------------------------------------------------------- run
    def run(self) -> None:
        # Wiring first, while the machine has no namespaces of ours being torn down in the kernel.
        wiring = self.wiring()
        f, h = self.flotilla(), self.hand()
        self.fairness(f, h)
        paths = {
            "container->container (flotilla bridge)": (f["b"], f["a"], f["ip_b"], 5201, 7000),
            "container->container (hand-built bridge)": (h["b"], h["a"], h["ip_b"], 5201, 7000),
            "host->127.0.0.1 published port (flotilla DNAT)": (f["b"], None, "127.0.0.1", f["iperf_pub"], f["rr_pub"]),
            "host->container address (flotilla bridge, no NAT)": (f["b"], None, f["ip_b"], 5201, 7000),
            "host->container address (hand-built bridge)": (h["b"], None, h["ip_b"], 5201, 7000),
        }
        if "proxy_iperf" in f:
            paths["host->127.0.0.1 via docker-proxy (userland)"] = (f["b"], None, "127.0.0.1", f["proxy_iperf"], f["proxy_rr"])
        ratios = [("bridge: container->container", 0, 1, 0.95), ("published port vs direct access", 2, 3, 0.80),
                  ("bridge: host->container", 3, 4, None)]
        samples: dict[str, dict[str, list]] = {k: {"gbps": [], "p50": [], "p99": []} for k in paths}
        # Rounds alternate the order of the paths so that load from other processes on the
        # machine hits Flotilla's path and its baseline alike.
        for round_ in range(self.args.rounds):
            order = list(paths.items()) if round_ % 2 == 0 else list(reversed(paths.items()))
            for name, (srv_ns, cli_ns, ip, iperf_port, rr_port) in order:
                samples[name]["gbps"].append(self.iperf(srv_ns, cli_ns, ip, iperf_port, 5201))
                p50, p99 = self.rr(srv_ns, cli_ns, ip, rr_port, 7000)
                samples[name]["p50"].append(p50)
                samples[name]["p99"].append(p99)
        res = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in samples.items()}

        print(f"{'path (median of ' + str(self.args.rounds) + ' rounds)':58} {'Gbit/s':>8} {'rtt p50 us':>11} {'rtt p99 us':>11}")
        for name, r in res.items():
            print(f"{name:58} {r['gbps']:8.2f} {r['p50']:11.1f} {r['p99']:11.1f}")
        keys = list(paths)
        if "proxy_iperf" in f:
            ratios.append(("userland proxy vs direct access", 5, 3, None))
        for label, i, j, goal in ratios:
            o, b = samples[keys[i]], samples[keys[j]]
            tput = [x / y for x, y in zip(o["gbps"], b["gbps"])]
            rtt = [x / y for x, y in zip(o["p50"], b["p50"])]
            verdict = "" if goal is None else (f"  goal >= {goal:.2f}: " + ("met" if statistics.median(tput) >= goal else "NOT met"))
            print(f"ratio {label:34} throughput {statistics.median(tput):.2f}x (rounds {min(tput):.2f}-{max(tput):.2f})  "
                  f"rtt p50 {statistics.median(rtt):.2f}x{verdict}")
        q = statistics.quantiles
        for key in ("connect", "connect+publish", "release", "release with port"):
            v = wiring[key]
            print(f"{key:18} {len(v)} containers: median {statistics.median(v):6.2f} ms, p90 {q(v, n=10)[-1]:6.2f} ms, max {max(v):6.2f} ms")
        print(f"-p of one port adds {statistics.median(wiring['connect+publish']) - statistics.median(wiring['connect']):.2f} ms "
              f"to wiring and {statistics.median(wiring['release with port']) - statistics.median(wiring['release']):.2f} ms to release "
              "(medians; goal: wiring under 5 ms)")
        theirs = wiring["ip"]
        print(f"same wiring with ip commands, {len(theirs)} containers: median {statistics.median(theirs):.2f} ms "
              f"(flotilla is {statistics.median(theirs) / statistics.median(wiring['connect']):.1f}x faster)")
        print(f"load average {os.getloadavg()[0]:.1f} (other processes on the machine skew single runs)")

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
    ap.add_argument("--rounds", type=int, default=5, help="alternating measurement rounds")
    ap.add_argument("--wire-count", type=int, default=50, help="containers wired for the timing")
    ap.add_argument("--rr-count", type=int, default=3000, help="request/response round trips per path")
    bench = Bench(ap.parse_args())
    try:
        bench.run()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
