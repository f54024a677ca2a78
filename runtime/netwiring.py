"""The runtime's side of container networking: which `NetworkManager` call goes with which
container lifecycle step (docs/network.md, "How the container lifecycle uses it").

A container record keeps the networks it is *configured* for (`record["networks"]`: name,
static ip, aliases; `network connect` on a stopped container only changes this list). The
kernel side exists only while the container runs, as in Docker, which keeps an address only
while the container runs: `setup` before the shim starts (namespace, endpoints, published
ports), `release` when its exit is finalized and on remove. A crash in between is repaired by
`NetworkManager.recover(live_ids)`, which releases whatever belongs to no running container.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
from pathlib import Path
from typing import Any

from .errors import Conflict, InvalidArgument, NotFound
from .network import NetworkInfo, NetworkManager, PortMapping, parse_port_spec
from .network import files as netfiles
from .spec import ContainerSpec

DEFAULT_CGROUP_PARENT = "flotilla"
NEW_NETNS = "new"  # `setup`'s answer for network none: the shim creates the namespace (CLONE_NEWNET)


def instance_for(cgroup_parent: str) -> str:
    """The network instance of a runtime: "" for the default cgroup parent, else 8 hex of a hash.

    Two runtimes on one host never share a cgroup parent (they would kill each other's
    containers), so deriving the instance from it keeps their bridges, veths, namespaces and
    iptables chains apart without another flag.
    """
    if cgroup_parent.strip("/") == DEFAULT_CGROUP_PARENT:
        return ""
    return hashlib.sha256(cgroup_parent.encode()).hexdigest()[:8]


def configured(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The container's configured networks (records made before networking: from the spec)."""
    spec = record["spec"]
    return record.setdefault("networks", [{"network": spec.get("network_mode") or "none", "ip": spec.get("ip", ""),
                                           "aliases": list(spec.get("network_aliases", []))}])


def _generated_hosts(record: dict[str, Any], bundle: Path | None) -> Path | None:
    """The container's /etc/hosts in its bundle, unless the user mounted their own there."""
    if bundle is None or any(os.path.normpath(m["destination"]) == "/etc/hosts" for m in record.get("mounts", [])):
        return None
    path = bundle / "hosts"
    return path if path.exists() else None


def _user_network(net: NetworkInfo) -> bool:
    return net.driver == "bridge" and not net.builtin


class NetWiring:
    """Container networks of one Runtime, on top of its own `NetworkManager` (`.nm`)."""

    def __init__(self, root: Path, cgroup_parent: str, default_subnet: str, options: dict[str, Any] | None = None) -> None:
        self.nm = NetworkManager(root, instance_for(cgroup_parent), default_subnet, **(options or {}))

    # ------------------------------------------------------------------ create
    def configure(self, spec: ContainerSpec) -> list[dict[str, Any]]:
        """Check the network part of a spec at create; the container's configured networks."""
        net = self.nm.network(spec.network_mode)
        if spec.ip:
            if not _user_network(net):
                raise InvalidArgument("user specified IP address is supported on user defined networks only")
            try:
                ipaddress.IPv4Address(spec.ip)
            except ValueError:
                raise InvalidArgument(f"invalid IPv4 address {spec.ip!r} for --ip") from None
        if spec.network_aliases and not _user_network(net):
            raise InvalidArgument("network-scoped aliases are supported only for containers in user defined networks")
        if (spec.ports or spec.publish_all) and net.driver != "bridge":
            raise InvalidArgument(f"conflicting options: port publishing and network {net.name} "
                                  "(ports are published from bridge networks only)")
        for port in spec.ports:
            parse_port_spec(port)
        return [{"network": net.name, "ip": spec.ip, "aliases": list(spec.network_aliases)}]

    # ------------------------------------------------------------------ start / stop
    def setup(self, record: dict[str, Any], exposed: dict[str, Any]) -> str:
        """Before the shim starts: namespace, endpoints, published ports; the netns path ("" for host,
        NEW_NETNS for network none).

        A container on network none gets a namespace with nothing but `lo` in it, which nobody
        else ever joins (connect refuses it): the shim makes it when it clones the container and
        brings `lo` up, so the host holds no state of it (no bind mount, no record) and nothing
        is left to release. On any failure everything made here is released again, so a failed
        start leaks nothing.
        """
        cid = record["id"]
        self.nm.release(cid)  # leftovers of a previous run that no exit query finalized
        nets = [(self.nm.network(n["network"]), n) for n in configured(record)]
        if nets[0][0].driver == "null":
            return NEW_NETNS
        try:
            if nets[0][0].driver == "host":
                self.nm.connect(cid, "host")
                return ""
            path = self.nm.prepare(cid, record["process"]["hostname"])
            for net, n in nets:
                self.nm.connect(cid, net.name, ip=n["ip"], aliases=n["aliases"], name=record["name"])
            ports = self.port_mappings(record["spec"], exposed)
            if ports:
                self.nm.publish(cid, ports)
        except BaseException:
            self.nm.release(cid)
            raise
        return path

    @staticmethod
    def port_mappings(spec: dict[str, Any], exposed: dict[str, Any]) -> list[PortMapping]:
        """`-p` specs, plus with `-P` every EXPOSEd port not published explicitly (random host port)."""
        ports = [m for text in spec.get("ports", []) for m in parse_port_spec(text)]
        if spec.get("publish_all"):
            mapped = {(m.container_port, m.proto) for m in ports}
            for key in sorted(exposed or {}):
                port, _, proto = key.partition("/")
                if port.isdigit() and (int(port), proto or "tcp") not in mapped:
                    ports.append(PortMapping(int(port), proto or "tcp"))
        return ports

    def files(self, record: dict[str, Any]) -> dict[str, bytes]:
        """/etc/resolv.conf, /etc/hosts, /etc/hostname of a set-up container."""
        if self.nm.network(configured(record)[0]["network"]).driver == "null":
            texts = self.nm.isolated_files(record["process"]["hostname"] or record["id"][:12])
        else:
            texts = self.nm.container_files(record["id"])
        return {dest: text.encode() for dest, text in texts.items()}

    def release(self, cid: str) -> None:
        self.nm.release(cid)

    def recover(self, live_ids: list[str]) -> None:
        self.nm.recover(live_ids)

    def close(self) -> None:
        self.nm.close()

    # ------------------------------------------------------------------ connect / disconnect
    def connect(self, record: dict[str, Any], running: bool, network: str, ip: str, aliases: list[str],
                bundle: Path | None = None) -> None:
        """`network connect`: add to the configured networks; wire at once when running, and then
        add the new address to the container's generated /etc/hosts (in `bundle`) as Docker does."""
        net = self.nm.network(network)
        current = [self.nm.network(n["network"]) for n in configured(record)]
        if any(c.id == net.id for c in current):
            raise Conflict(f"container {record['name']} is already connected to network {net.name}")
        if net.driver != "bridge" or any(c.driver != "bridge" for c in current):
            mode = next((c.name for c in current if c.driver != "bridge"), net.name)
            raise Conflict(f"container {record['name']} is on network {mode}, which must be its only network")
        if ip and not _user_network(net):
            raise InvalidArgument("user specified IP address is supported on user defined networks only")
        if aliases and not _user_network(net):
            raise InvalidArgument("network-scoped aliases are supported only for containers in user defined networks")
        if running:
            ep = self.nm.connect(record["id"], net.name, ip=ip, aliases=aliases, name=record["name"])
            hosts = _generated_hosts(record, bundle)
            if hosts is not None:
                netfiles.hosts_add(hosts, ep.ip, record["process"]["hostname"])
        record["networks"].append({"network": net.name, "ip": ip, "aliases": list(aliases)})

    def disconnect(self, record: dict[str, Any], running: bool, network: str, bundle: Path | None = None) -> None:
        """`network disconnect`: drop from the configured networks; unwire when running, and then
        take the address out of the container's generated /etc/hosts."""
        net = self.nm.network(network)
        kept = [n for n in configured(record) if self.nm.network(n["network"]).id != net.id]
        if len(kept) == len(record["networks"]):
            raise NotFound(f"container {record['name']} is not connected to network {net.name}")
        if net.driver != "bridge":
            raise Conflict(f"container {record['name']} cannot be disconnected from network {net.name}: remove it instead")
        if running:
            gone = [e.ip for e in self.nm.endpoints(record["id"]) if e.network_id == net.id and e.ip]
            self.nm.disconnect(record["id"], net.name)
            hosts = _generated_hosts(record, bundle)
            for ip in gone if hosts is not None else []:
                netfiles.hosts_remove(hosts, ip)
        record["networks"] = kept

    # ------------------------------------------------------------------ inspect
    def settings(self, record: dict[str, Any], running: bool) -> dict[str, Any]:
        """Docker's NetworkSettings: addresses while running, the configured networks always."""
        cid = record["id"]
        live = {e.network: e for e in self.nm.endpoints(cid)} if running and cid in self.nm.containers() else {}
        networks = {}
        for n in configured(record):
            try:
                net_id = self.nm.network(n["network"]).id
            except NotFound:
                net_id = ""
            e = live.get(n["network"])
            networks[n["network"]] = {
                "NetworkID": net_id, "IPAMConfig": {"IPv4Address": n["ip"]} if n["ip"] else None,
                "Aliases": list(n["aliases"]) or None,
                "IPAddress": e.ip if e else "", "IPPrefixLen": e.prefixlen if e else 0,
                "Gateway": e.gateway if e else "", "MacAddress": e.mac if e else "",
            }
        ports: dict[str, Any] = {}
        for m in self.port_mappings(record["spec"], {}):
            ports.setdefault(f"{m.container_port}/{m.proto}", None)
        for m in self.nm.ports(cid) if running else []:
            ports.setdefault(f"{m.container_port}/{m.proto}", None)
            ports[f"{m.container_port}/{m.proto}"] = (ports[f"{m.container_port}/{m.proto}"] or []) + [
                {"HostIp": m.host_ip or "0.0.0.0", "HostPort": str(m.host_port)}]
        first = next(iter(networks.values()), {})
        sandbox = running and cid in self.nm.containers() and self.nm.network(configured(record)[0]["network"]).driver != "host"
        return {
            "SandboxKey": str(self.nm.names.netns_path(cid)) if sandbox else "",
            "Ports": ports, "Networks": networks,
            "IPAddress": first.get("IPAddress", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
            "Gateway": first.get("Gateway", ""), "MacAddress": first.get("MacAddress", ""),
        }

    def network_document(self, ref: str, names: dict[str, str], isolated: list[str]) -> dict[str, Any]:
        """`network inspect`: Docker's document, with the running containers attached to it
        (`isolated`: the running containers on network none, which have no network state)."""
        net = self.nm.network(ref)
        containers = {cid: {"Name": names.get(cid, ""), "MacAddress": "", "IPv4Address": "", "IPv6Address": ""}
                      for cid in (isolated if net.driver == "null" else [])}
        for cid in self.nm.containers():
            for e in self.nm.endpoints(cid):
                if e.network_id == net.id:
                    containers[cid] = {"Name": names.get(cid, ""), "MacAddress": e.mac,
                                       "IPv4Address": f"{e.ip}/{e.prefixlen}" if e.ip else "", "IPv6Address": ""}
        return {
            "Name": net.name, "Id": net.id, "Created": net.created, "Scope": "local", "Driver": net.driver,
            "EnableIPv6": False, "Internal": net.internal, "Attachable": False, "Ingress": False,
            "IPAM": {"Driver": "default", "Options": {}, "Config": [
                {k: v for k, v in (("Subnet", net.subnet), ("IPRange", net.ip_range), ("Gateway", net.gateway)) if v}
            ] if net.subnet else []},
            "Containers": containers, "Options": dict(net.options), "Labels": dict(net.labels),
            "Bridge": net.bridge, "MTU": net.mtu,
        }
