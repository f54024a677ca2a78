"""NetworkManager: the networks of one agent (instance) on one host.

State lives in <root>/network/: `networks/<id>.json` (one record per network) and
`containers/<id>.log` (a container's namespace path, endpoints with their addresses, published
ports). Addresses are allocated *inside* the container record, so one atomic write allocates and
records them together (see ipam.py). The order of every operation is chosen so that a kill -9
at any point loses nothing and leaks nothing that `recover` cannot find:

- create: the record is written first, then kernel objects (recover re-creates missing ones);
- remove / release: the record goes last for containers (release is idempotent and recover
  repeats it for a record whose container is gone), first for networks (the orphan scan of
  `recover` deletes a bridge of ours that no record names).

All public methods take one lock, so the agent may call them from several threads.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import socket
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from . import bridge as br
from . import files, ipam, netlink
from .dns import DnsServer, read_upstreams
from .errors import Conflict, InvalidArgument, NetworkError, NotFound, RuntimeFault
from .firewall import Firewall, FwNetwork
from .models import Endpoint, NetworkInfo, PortMapping
from .names import Names, check_container_id
from .portnat import NatPort, PortNat
from .ports import reserve
from .state import RecordStore

log = logging.getLogger(__name__)

OPT_MTU = "com.docker.network.driver.mtu"
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
SUPPORTED_OPTIONS = (OPT_MTU, OPT_BRIDGE_NAME, OPT_MASQUERADE)
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
DEFAULT_MTU = 1500


@dataclass
class _Container:
    """What the manager knows of one container (persisted as containers/<id>.log)."""

    id: str
    hostname: str
    netns: str = ""
    mode: str = ""  # "" (prepared, not connected), "bridge", "none" or "host"
    endpoints: list[Endpoint] = field(default_factory=list)
    ports: list[PortMapping] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "hostname": self.hostname, "netns": self.netns, "mode": self.mode,
                "endpoints": [e.to_dict() for e in self.endpoints], "ports": [p.to_dict() for p in self.ports]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "_Container":
        return cls(d["id"], d["hostname"], d["netns"], d["mode"],
                   [Endpoint.from_dict(e) for e in d["endpoints"]], [PortMapping.from_dict(p) for p in d["ports"]])


class NetworkManager:
    """Bridge networks, IPAM, NAT, published ports and DNS for the containers of one agent."""

    def __init__(self, root: Path, instance: str = "", default_subnet: str = "10.88.0.0/16",
                 default_bridge_name: str = "", *, resolv_conf: Path = Path("/etc/resolv.conf"),
                 dns_upstreams: list[tuple[str, int]] | None = None, dns_port: int = 53) -> None:
        """Load the state under <root>/network/; touches no kernel object (see recover)."""
        self.names = Names(instance, default_bridge_name)
        self.default_pool = ipam.make_pool(default_subnet)
        self.resolv_conf = resolv_conf
        self.dir = Path(root) / "network"
        self._net_store = RecordStore(self.dir / "networks", durable=True)
        self._ctr_store = RecordStore(self.dir / "containers", durable=False)
        self._lock = threading.RLock()
        self._networks = {k: NetworkInfo.from_dict(v) for k, v in self._net_store.load_all().items()}
        self._containers = {k: _Container.from_dict(v) for k, v in self._ctr_store.load_all().items()}
        self._ensure_builtins()
        self._fw = Firewall(self.names)
        self._nat = PortNat(self.names)
        self._links: br.Links | None = None
        self._rtnl: netlink.Rtnl | None = None
        self._port_socks: dict[str, list[socket.socket]] = {}
        self._last_ip: dict[str, str] = {}
        upstreams = dns_upstreams if dns_upstreams is not None else read_upstreams(files.read_host_resolv_conf(resolv_conf))
        self._dns = DnsServer(self._resolve, upstreams, self._forwards_for, port=dns_port, reverse=self._reverse)
        self._dns_view: dict[str, Any] = {}
        self._rebuild_dns_view()

    # ----------------------------------------------------------------- networks

    def _ensure_builtins(self) -> None:
        """bridge, host and none always exist; the default bridge follows default_subnet while unused."""
        by_name = {n.name: n for n in self._networks.values()}
        now = _now()
        wanted = [
            NetworkInfo(secrets.token_hex(32), "bridge", "bridge", str(self.default_pool.subnet), str(self.default_pool.gateway),
                        bridge=self.names.default_bridge, mtu=DEFAULT_MTU, created=now, builtin=True),
            NetworkInfo(secrets.token_hex(32), "host", "host", created=now, builtin=True),
            NetworkInfo(secrets.token_hex(32), "none", "null", created=now, builtin=True),
        ]
        for info in wanted:
            old = by_name.get(info.name)
            if old is None:
                self._net_store.write(info.id, info.to_dict())
                self._networks[info.id] = info
            elif info.name == "bridge" and (old.subnet, old.bridge) != (info.subnet, info.bridge) and not self._attached(old.id):
                new = replace(old, subnet=info.subnet, gateway=info.gateway, bridge=info.bridge)
                self._net_store.write(new.id, new.to_dict())
                self._networks[new.id] = new

    def networks(self) -> list[NetworkInfo]:
        with self._lock:
            return sorted(self._networks.values(), key=lambda n: (not n.builtin, n.name))

    def network(self, ref: str) -> NetworkInfo:
        """A network by name, id or unique id prefix."""
        with self._lock:
            for n in self._networks.values():
                if n.name == ref or n.id == ref:
                    return n
            found = [n for n in self._networks.values() if ref and n.id.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise Conflict(f"network id prefix {ref!r} is ambiguous: give more characters")
            raise NotFound(f"network {ref} not found")

    def create_network(self, name: str, driver: str = "bridge", subnet: str = "", gateway: str = "",
                       ip_range: str = "", internal: bool = False, options: dict | None = None,
                       labels: dict | None = None) -> NetworkInfo:
        """Create a bridge network: record, bridge with the gateway address, rules, DNS."""
        with self._lock:
            if not _NAME_RE.match(name):
                raise InvalidArgument(f"invalid network name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")
            if any(n.name == name for n in self._networks.values()):
                raise Conflict(f"network with name {name} already exists")
            if driver != "bridge":
                raise InvalidArgument(f"driver {driver!r} is not supported here: only bridge networks can be created")
            options = dict(options or {})
            unknown = sorted(set(options) - set(SUPPORTED_OPTIONS))
            if unknown:
                raise InvalidArgument(f"unknown network option {unknown[0]!r}: supported are {', '.join(SUPPORTED_OPTIONS)}")
            mtu = _parse_mtu(options.get(OPT_MTU, str(DEFAULT_MTU)))
            masquerade = options.get(OPT_MASQUERADE, "true").lower() != "false"
            taken = self._taken_subnets()
            if subnet:
                pool = ipam.make_pool(subnet, gateway, ip_range)
                for other, owner in taken:
                    if ipam.overlaps(str(pool.subnet), other):
                        raise Conflict(f"subnet {subnet} overlaps {other} of {owner}: choose another --subnet")
            else:
                if gateway or ip_range:
                    raise InvalidArgument("--gateway and --ip-range need --subnet")
                pool = ipam.make_pool(ipam.pick_subnet([t for t, _ in taken]))
            net_id = secrets.token_hex(32)
            bridge_name = options.get(OPT_BRIDGE_NAME, "")
            used_bridges = {n.bridge for n in self._networks.values()}
            if bridge_name:
                if len(bridge_name) > 15 or not re.match(r"^[A-Za-z0-9_.-]+$", bridge_name):
                    raise InvalidArgument(f"bridge name {bridge_name!r} must be at most 15 characters of [A-Za-z0-9_.-]")
                if bridge_name in used_bridges:
                    raise Conflict(f"bridge {bridge_name} is already used by another network")
                if self._host_links().index(bridge_name) is not None:  # never adopt (and later delete) a host link
                    raise Conflict(f"interface {bridge_name} already exists on the host: choose another bridge name")
            else:
                while self.names.bridge_for(net_id) in used_bridges:
                    net_id = secrets.token_hex(32)
                bridge_name = self.names.bridge_for(net_id)
            info = NetworkInfo(net_id, name, "bridge", str(pool.subnet), str(pool.gateway),
                               str(pool.ip_range) if ip_range else "", internal, options, dict(labels or {}),
                               bridge_name, mtu, masquerade, _now())
            self._net_store.write(info.id, info.to_dict())
            self._networks[info.id] = info
            try:
                self._materialize(info)
                self._sync_firewall()
            except BaseException:
                self._net_store.delete(info.id)
                del self._networks[info.id]
                self._dematerialize(info)
                self._sync_firewall_quietly()
                raise
            self._rebuild_dns_view()
            return info

    def remove_network(self, ref: str) -> None:
        """Remove a user network; Conflict while containers are attached."""
        with self._lock:
            info = self.network(ref)
            if info.builtin:
                raise Conflict(f"{info.name} is a pre-defined network and cannot be removed")
            attached = self._attached(info.id)
            if attached:
                raise Conflict(f"network {info.name} has active endpoints (containers {', '.join(c[:12] for c in attached)}): "
                               "disconnect or remove them first")
            self._net_store.delete(info.id)
            del self._networks[info.id]
            self._dematerialize(info)
            self._sync_firewall()
            self._rebuild_dns_view()

    # --------------------------------------------------------------- containers

    def prepare(self, container_id: str, hostname: str) -> str:
        """Create the container's network namespace (lo up); returns its path for `netns=`."""
        with self._lock:
            check_container_id(container_id)
            if container_id in self._containers:
                raise Conflict(f"container {container_id} already has network state: release it first")
            path = self.names.netns_path(container_id)
            ctr = _Container(container_id, hostname or container_id[:12], str(path))
            self.names.netns_dir.mkdir(parents=True, exist_ok=True)
            self._ctr_store.write(container_id, ctr.to_dict())
            self._containers[container_id] = ctr
            try:
                with netlink.create_netns(path) as rt:
                    rt.request([netlink.link_up(1)])
            except BaseException:
                netlink.delete_netns(path)
                self._ctr_store.delete(container_id)
                del self._containers[container_id]
                raise
            return str(path)

    def connect(self, container_id: str, network: str, ip: str = "", aliases: Iterable[str] = (),
                name: str = "") -> Endpoint:
        """Attach a container to a network: a veth pair (eth<N> inside, on the bridge outside),
        its address, and the default route via the gateway when it is the first network."""
        with self._lock:
            net = self.network(network)
            aliases = tuple(aliases)
            for a in aliases + ((name,) if name else ()):
                if not _NAME_RE.match(a):
                    raise InvalidArgument(f"invalid name or alias {a!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")
            ctr = self._containers.get(container_id)
            if net.driver == "host":
                return self._connect_host(container_id, ctr, net)
            if ctr is None or not ctr.netns:
                raise NotFound(f"container {container_id} has no network namespace: call prepare first")
            if ctr.mode in ("host", "none") or (net.driver == "null" and ctr.endpoints):
                raise Conflict(f"container {container_id} is on network {ctr.mode or net.name}, which must be its only network")
            if net.driver == "null":
                ctr.mode = "none"
                self._ctr_store.write(container_id, ctr.to_dict())
                return Endpoint(container_id, net.id, net.name)
            if any(e.network_id == net.id for e in ctr.endpoints):
                raise Conflict(f"container {container_id} is already connected to network {net.name}")
            return self._connect_bridge(ctr, net, ip, aliases, name)

    def _connect_host(self, container_id: str, ctr: _Container | None, net: NetworkInfo) -> Endpoint:
        check_container_id(container_id)
        if ctr is not None and ctr.netns:
            raise InvalidArgument(f"container {container_id} has its own network namespace: "
                                  "for the host network call connect without prepare")
        if ctr is not None:
            raise Conflict(f"container {container_id} is already on the host network")
        ctr = _Container(container_id, socket.gethostname(), "", "host")
        self._ctr_store.write(container_id, ctr.to_dict())
        self._containers[container_id] = ctr
        return Endpoint(container_id, net.id, net.name)

    def _connect_bridge(self, ctr: _Container, net: NetworkInfo, ip: str, aliases: tuple[str, ...], name: str) -> Endpoint:
        if net.name == "bridge" and not self._attached(net.id):
            # The default bridge appears with its first container: check its subnet then, as
            # create_network checks a user network's (a shadowed host route breaks the host).
            for other, owner in self._taken_subnets():
                if ipam.overlaps(net.subnet, other):
                    raise Conflict(f"default bridge subnet {net.subnet} overlaps {other} of {owner}: "
                                   "start the agent with another --default-subnet")
        pool = self._pool(net)
        used = self._used_ips(net.id)
        addr = pool.check_static(ip, used, net.name) if ip else pool.allocate(used, net.name, self._last_ip.get(net.id, ""))
        in_use = {e.ifname for e in ctr.endpoints}
        ifname = next(f"eth{i}" for i in range(len(in_use) + 1) if f"eth{i}" not in in_use)
        first = not ctr.endpoints
        ep = Endpoint(ctr.id, net.id, net.name, ifname, self.names.new_veth(), addr, pool.subnet.prefixlen,
                      str(pool.gateway), ipam.mac_for(addr), net.mtu, aliases, name)
        fresh_default = net.name == "bridge" and not self._attached(net.id)
        ctr.endpoints.append(ep)
        ctr.mode = "bridge"
        self._ctr_store.write(ctr.id, ctr.to_dict())
        try:
            if fresh_default:
                self._materialize(net)
                self._sync_firewall()
            ep = self._wire(ctr, ep, pool, route=first and not net.internal)
        except BaseException:
            ctr.endpoints = [e for e in ctr.endpoints if e.network_id != net.id]
            ctr.mode = "bridge" if ctr.endpoints else ""
            self._ctr_store.write(ctr.id, ctr.to_dict())
            self._host_links().delete(ep.host_ifname)
            if fresh_default:
                self._dematerialize(net)
                self._sync_firewall_quietly()
            raise
        self._last_ip[net.id] = addr
        self._rebuild_dns_view()
        return ep

    def _wire(self, ctr: _Container, ep: Endpoint, pool: ipam.Pool, route: bool) -> Endpoint:
        """The kernel part of connect: one batched request on the host, one in the container."""
        net = self._networks[ep.network_id]
        master = socket.if_nametoindex(net.bridge)
        nsfd = os.open(ctr.netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for _attempt in range(8):
                try:
                    self._host_rtnl().request([netlink.new_veth(ep.host_ifname, ep.ifname, nsfd, ep.mtu, master, ep.mac)])
                    break
                except OSError as e:
                    if e.errno != errno.EEXIST or ep.ifname in _links_in(ctr.netns):
                        raise
                    ep = replace(ep, host_ifname=self.names.new_veth())
                    ctr.endpoints[-1] = ep
                    self._ctr_store.write(ctr.id, ctr.to_dict())
        finally:
            os.close(nsfd)
        br.set_hairpin(ep.host_ifname)
        self._configure_inside(ctr, ep, pool, route)
        return ep

    @staticmethod
    def _configure_inside(ctr: _Container, ep: Endpoint, pool: ipam.Pool, route: bool, tolerate: tuple[int, ...] = ()) -> None:
        """Inside the container's namespace: interface up, address, default route (one batch)."""
        with netlink.entered(ctr.netns):
            index = socket.if_nametoindex(ep.ifname)
            rt = netlink.Rtnl()
        with rt:
            msgs = [netlink.link_up(index), netlink.new_addr(index, ep.ip, ep.prefixlen, str(pool.subnet.broadcast_address))]
            if route:
                msgs.append(netlink.new_default_route(ep.gateway, index))
            rt.request(msgs, tolerate)

    def disconnect(self, container_id: str, network: str) -> None:
        """Detach a container from one network (its veth pair goes, its address is freed)."""
        with self._lock:
            net = self.network(network)
            ctr = self._containers.get(container_id)
            if ctr is None:
                raise NotFound(f"container {container_id} has no network state")
            if net.driver in ("host", "null"):
                if ctr.mode != ("host" if net.driver == "host" else "none"):
                    raise NotFound(f"container {container_id} is not connected to network {net.name}")
                raise Conflict(f"container {container_id} cannot be disconnected from network {net.name}: remove it instead")
            ep = next((e for e in ctr.endpoints if e.network_id == net.id), None)
            if ep is None:
                raise NotFound(f"container {container_id} is not connected to network {net.name}")
            self._host_links().delete(ep.host_ifname)
            had_ports = bool(ctr.ports)  # their DNAT target may change or go
            ctr.endpoints = [e for e in ctr.endpoints if e is not ep]
            if not ctr.endpoints:
                ctr.mode = ""
                self._close_ports(container_id)
                ctr.ports = []
            self._ctr_store.write(container_id, ctr.to_dict())
            emptied = net.name == "bridge" and not self._attached(net.id)
            if emptied:
                self._dematerialize(net)
            if emptied:
                self._sync_firewall()
            if had_ports:
                self._nat.sync(self._nat_ports())
            self._rebuild_dns_view()

    def publish(self, container_id: str, ports: list[PortMapping]) -> list[PortMapping]:
        """Publish ports of a connected container (DNAT to its first network's address)."""
        with self._lock:
            ctr = self._containers.get(container_id)
            if ctr is None or not ctr.endpoints:
                raise InvalidArgument(f"container {container_id} has no bridge network endpoint: connect it before publishing ports")
            if self._networks[ctr.endpoints[0].network_id].internal:
                raise InvalidArgument(f"network {ctr.endpoints[0].network} is internal: ports cannot be published from it")
            taken: list[tuple[socket.socket, PortMapping]] = []
            try:
                for p in ports:
                    taken.append(reserve(p))
                before = list(ctr.ports)
                ctr.ports = before + [m for _, m in taken]
                self._ctr_store.write(container_id, ctr.to_dict())
                try:
                    self._nat.add(self._nat_ports(ctr, ctr.ports[len(before):]), self._nat_ports())
                except BaseException:
                    ctr.ports = before
                    self._ctr_store.write(container_id, ctr.to_dict())
                    raise
            except BaseException:
                for sock, _ in taken:
                    sock.close()
                raise
            self._port_socks.setdefault(container_id, []).extend(s for s, _ in taken)
            return [m for _, m in taken]

    def release(self, container_id: str) -> None:
        """Remove everything of a container: ports, endpoints, addresses, veths, netns. Idempotent."""
        with self._lock:
            ctr = self._containers.get(container_id)
            if ctr is None:
                return
            if ctr.ports:
                rest = [p for c in self._containers.values() if c.id != container_id for p in self._nat_ports(c)]
                self._nat.remove(self._nat_ports(ctr), rest)
            self._close_ports(container_id)
            for ep in ctr.endpoints:
                self._host_links().delete(ep.host_ifname)
            if ctr.netns:
                netlink.delete_netns(Path(ctr.netns))
                _rmdir_if_empty(self.names.netns_dir)
            self._ctr_store.delete(container_id)
            del self._containers[container_id]
            default = self.network("bridge")
            emptied = any(e.network_id == default.id for e in ctr.endpoints) and not self._attached(default.id)
            if emptied:
                self._dematerialize(default)
                self._sync_firewall()
            self._rebuild_dns_view()

    def containers(self) -> list[str]:
        """Ids of every container with network state (prepared or connected)."""
        with self._lock:
            return sorted(self._containers)

    def endpoints(self, container_id: str) -> list[Endpoint]:
        with self._lock:
            ctr = self._containers.get(container_id)
            if ctr is None:
                raise NotFound(f"container {container_id} has no network state")
            if ctr.mode in ("host", "none"):
                net = self.network("host" if ctr.mode == "host" else "none")
                return [Endpoint(container_id, net.id, net.name)]
            return list(ctr.endpoints)

    def ports(self, container_id: str) -> list[PortMapping]:
        """The ports published for a container (as `docker port` lists them)."""
        with self._lock:
            ctr = self._containers.get(container_id)
            return list(ctr.ports) if ctr else []

    def isolated_files(self, hostname: str) -> dict[str, str]:
        """The same files for a container on network none (only `lo`: no address, no DNS server of ours)."""
        host_resolv = files.read_host_resolv_conf(self.resolv_conf)
        return {"/etc/resolv.conf": files.resolv_conf_default(host_resolv, ""), "/etc/hosts": files.hosts(hostname),
                "/etc/hostname": files.hostname(hostname)}

    def container_files(self, container_id: str) -> dict[str, str]:
        """Contents of /etc/resolv.conf, /etc/hosts and /etc/hostname for the container."""
        with self._lock:
            ctr = self._containers.get(container_id)
            if ctr is None:
                raise NotFound(f"container {container_id} has no network state")
            host_resolv = files.read_host_resolv_conf(self.resolv_conf)
            if ctr.mode == "host":
                hosts = files.read_host_resolv_conf(Path("/etc/hosts"))
                return {"/etc/resolv.conf": host_resolv, "/etc/hosts": hosts, "/etc/hostname": files.hostname(ctr.hostname)}
            first = ctr.endpoints[0] if ctr.endpoints else None
            if first is None:
                resolv = files.resolv_conf_default(host_resolv, "")
            elif self._networks[first.network_id].name == "bridge":
                resolv = files.resolv_conf_default(host_resolv, first.gateway)
            else:
                resolv = files.resolv_conf_internal(first.gateway, host_resolv)
            return {"/etc/resolv.conf": resolv, "/etc/hosts": files.hosts(ctr.hostname, *(e.ip for e in ctr.endpoints)),
                    "/etc/hostname": files.hostname(ctr.hostname)}

    # ------------------------------------------------------------------ recovery

    def recover(self, live_ids: Iterable[str]) -> None:
        """After an agent restart: release containers that are gone, re-create missing bridges,
        addresses, rules, DNS listeners and port reservations, and delete kernel objects of this
        instance that no record names (left by a crash between two steps)."""
        live = set(live_ids)
        with self._lock:
            for cid, ctr in list(self._containers.items()):
                if cid not in live or (ctr.netns and not netlink.is_netns_mount(Path(ctr.netns))):
                    self.release(cid)
            links = self._host_links()
            present = links.names()
            for ctr in self._containers.values():
                kept = [e for e in ctr.endpoints if e.host_ifname in present]
                if len(kept) != len(ctr.endpoints):  # connect was cut short: it never returned
                    ctr.endpoints = kept
                    ctr.mode = "bridge" if kept else ("" if ctr.mode == "bridge" else ctr.mode)
                    self._ctr_store.write(ctr.id, ctr.to_dict())
                for i, ep in enumerate(kept):  # finish a connect cut short after the veth was made
                    net = self._networks[ep.network_id]
                    self._configure_inside(ctr, ep, self._pool(net), i == 0 and not net.internal, (errno.EEXIST,))
            wanted_links = {e.host_ifname for c in self._containers.values() for e in c.endpoints}
            for net in self._networks.values():
                if self._needs_bridge(net):
                    self._materialize(net)
                    wanted_links.add(net.bridge)
            for name in sorted(present):
                if self.names.is_ours(name) and name not in wanted_links:
                    links.delete(name)
            wanted_ns = {Path(c.netns).name for c in self._containers.values() if c.netns}
            if self.names.netns_dir.is_dir():
                for entry in self.names.netns_dir.iterdir():
                    if entry.name not in wanted_ns:
                        netlink.delete_netns(entry)
                _rmdir_if_empty(self.names.netns_dir)
            for cid, ctr in self._containers.items():
                if ctr.ports and cid not in self._port_socks:
                    socks = []
                    for p in ctr.ports:
                        try:
                            socks.append(reserve(p)[0])
                        except RuntimeFault as e:
                            log.warning("published port %s of %s could not be reserved again: %s", p, cid, e)
                    self._port_socks[cid] = socks
            self._sync_firewall()
            self._nat.sync(self._nat_ports())
            self._rebuild_dns_view()

    def close(self) -> None:
        """Stop the DNS thread and close handles and port reservations; kernel state stays."""
        with self._lock:
            self._dns.stop()
            for cid in list(self._port_socks):
                self._close_ports(cid)
            if self._links is not None:
                self._links.close()
                self._links = None
            if self._rtnl is not None:
                self._rtnl.close()
                self._rtnl = None
            self._nat.close()

    # ------------------------------------------------------------------ internals

    def _host_links(self) -> br.Links:
        if self._links is None:
            self._links = br.Links()
        return self._links

    def _host_rtnl(self) -> netlink.Rtnl:
        if self._rtnl is None:
            self._rtnl = netlink.Rtnl()
        return self._rtnl

    def _pool(self, net: NetworkInfo) -> ipam.Pool:
        return ipam.make_pool(net.subnet, net.gateway, net.ip_range)

    def _attached(self, network_id: str) -> list[str]:
        return [c.id for c in self._containers.values() if any(e.network_id == network_id for e in c.endpoints)]

    def _used_ips(self, network_id: str) -> set[str]:
        return {e.ip for c in self._containers.values() for e in c.endpoints if e.network_id == network_id}

    def _needs_bridge(self, net: NetworkInfo) -> bool:
        """User bridge networks always have their bridge; the default one only while in use."""
        return net.driver == "bridge" and (not net.builtin or bool(self._attached(net.id)))

    def _taken_subnets(self) -> list[tuple[str, str]]:
        own = [(n.subnet, f"network {n.name}") for n in self._networks.values()
               if n.driver == "bridge" and (not n.builtin or self._attached(n.id))]
        ours = {n.bridge for n in self._networks.values()}
        host = [(s, f"interface {dev}") for s, dev in self._host_links().connected_routes() if dev not in ours]
        return own + host

    def _materialize(self, net: NetworkInfo) -> None:
        pool = ipam.make_pool(net.subnet, net.gateway, net.ip_range)
        br.enable_forwarding()
        self._host_links().ensure_bridge(net.bridge, net.gateway, pool.subnet.prefixlen, net.mtu)
        try:
            self._dns.listen(net.gateway)
        except OSError as e:
            log.warning("no DNS on network %s: cannot listen on %s:%d: %s", net.name, net.gateway, self._dns.port, e)

    def _dematerialize(self, net: NetworkInfo) -> None:
        self._dns.unlisten(net.gateway)
        self._host_links().delete_bridge(net.bridge)

    def _sync_firewall(self) -> None:
        """The iptables rules of the networks (not per container: published ports are in _nat)."""
        nets = [FwNetwork(n.bridge, n.subnet, n.internal, n.masquerade) for n in self._networks.values() if self._needs_bridge(n)]
        self._fw.sync(nets)

    def _nat_ports(self, only: _Container | None = None, ports: list[PortMapping] | None = None) -> list[NatPort]:
        """DNATs of one container (`only`, optionally just `ports` of it) or of every container."""
        ctrs = [only] if only is not None else list(self._containers.values())
        return [NatPort(p.host_ip, p.host_port, p.proto, c.endpoints[0].ip, p.container_port)
                for c in ctrs if c.endpoints for p in (ports if ports is not None else c.ports)]

    def _sync_firewall_quietly(self) -> None:
        """During a rollback: the original error matters more than a second one."""
        try:
            self._sync_firewall()
        except NetworkError as e:
            log.warning("firewall sync during rollback failed: %s", e)

    def _close_ports(self, container_id: str) -> None:
        for sock in self._port_socks.pop(container_id, []):
            sock.close()

    # ------------------------------------------------------------------ DNS

    def _rebuild_dns_view(self) -> None:
        """An immutable snapshot for the DNS thread, swapped in one assignment."""
        by_gw = {n.gateway: n.id for n in self._networks.values() if n.driver == "bridge"}
        user = {n.id for n in self._networks.values() if n.driver == "bridge" and not n.builtin}
        member: dict[tuple[str, str], str] = {}
        nets_of: dict[str, list[str]] = {}
        names: dict[str, dict[str, list[str]]] = {nid: {} for nid in user}
        ptr: dict[tuple[str, str], str] = {}
        for c in self._containers.values():
            for e in c.endpoints:
                member[(e.network_id, e.ip)] = c.id
                if e.network_id not in user:
                    continue
                nets_of.setdefault(c.id, []).append(e.network_id)
                ptr[(e.network_id, e.ip)] = (e.name or c.id[:12]).lower()
                for key in {e.name, *e.aliases, c.id, c.id[:12]} - {""}:
                    names[e.network_id].setdefault(key.lower(), []).append(e.ip)
        internal = {n.gateway for n in self._networks.values() if n.internal}
        self._dns_view = {"by_gw": by_gw, "member": member, "nets_of": nets_of, "names": names, "ptr": ptr,
                          "internal": internal}

    def _visible_networks(self, view: dict[str, Any], listen: str, client: str) -> list[str]:
        """The networks whose names an asker sees: all it shares with others, or the one asked on."""
        net = view["by_gw"].get(listen)
        if net is None:
            return []
        cid = view["member"].get((net, client))
        return view["nets_of"].get(cid, [net]) if cid else [net]

    def _resolve(self, listen: str, client: str, qname: str) -> list[str] | None:
        view = self._dns_view
        for nid in self._visible_networks(view, listen, client):
            found = view["names"].get(nid, {}).get(qname.rstrip("."))
            if found:
                return sorted(found)
        return None

    def _reverse(self, listen: str, client: str, ip: str) -> str | None:
        view = self._dns_view
        for nid in self._visible_networks(view, listen, client):
            name = view["ptr"].get((nid, ip))
            if name:
                return name
        return None

    def _forwards_for(self, listen: str) -> bool:
        return listen not in self._dns_view["internal"]


def _links_in(netns: str) -> set[str]:
    with netlink.entered(netns):
        return {name for _, name in socket.if_nameindex()}


def _rmdir_if_empty(path: Path) -> None:
    """The instance's netns directory goes with its last namespace (nothing left on the host)."""
    try:
        path.rmdir()
    except OSError:
        pass


def _parse_mtu(text: str) -> int:
    try:
        mtu = int(text)
    except ValueError:
        raise InvalidArgument(f"invalid MTU {text!r}: give a number of bytes, 68-65535") from None
    if not 68 <= mtu <= 65535:
        raise InvalidArgument(f"invalid MTU {mtu}: must be 68-65535")
    return mtu


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
