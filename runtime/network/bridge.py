"""Linux bridges and host-side links, through a persistent pyroute2 IPRoute handle.

Bridges are created once per network (not on the container hot path), so the convenience of
IPRoute is worth its cost here; the per-container work is in netlink.py.
"""
from __future__ import annotations

import errno
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .errors import Conflict


def _sysctl(path: str, value: str) -> None:
    Path(path).write_text(value)


def enable_forwarding() -> None:
    """Routing between bridges and the host's uplinks needs it; like Docker, Flotilla turns it on
    when it creates its first network and leaves it on (other things may rely on it by then)."""
    p = Path("/proc/sys/net/ipv4/ip_forward")
    if p.read_text().strip() != "1":
        _sysctl(str(p), "1")


class Links:
    """Bridge and link operations in the host's network namespace."""

    def __init__(self) -> None:
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def ensure_bridge(self, name: str, gateway: str, prefixlen: int, mtu: int) -> int:
        """Create (or complete, after a crash) a bridge with the gateway address, up.

        route_localnet lets DNAT from 127.0.0.1 leave through this bridge (published ports on
        localhost without a userland proxy); it is a per-interface setting, gone with the bridge.
        """
        idx = self.index(name)
        if idx is None:
            try:
                self.ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
            idx = self.index(name)
            assert idx is not None
        kind = self.ipr.get_links(idx)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        if kind != "bridge":
            raise Conflict(f"interface {name} exists and is not a bridge: remove it or choose another name")
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in self.ipr.get_addr(index=idx, family=2)}
        if (gateway, prefixlen) not in have:
            self.ipr.addr("add", index=idx, address=gateway, prefixlen=prefixlen)
        self.ipr.link("set", index=idx, state="up", mtu=mtu)
        _sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")
        return idx

    def delete_bridge(self, name: str) -> None:
        """Delete a bridge of ours; a link of that name that is no bridge is not ours: left alone."""
        idx = self.index(name)
        if idx is not None and self.ipr.get_links(idx)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "bridge":
            self.delete(name)

    def delete(self, name: str) -> None:
        """Delete a link by name; already gone is fine (idempotent teardown)."""
        try:
            self.ipr.link("del", ifname=name)
        except NetlinkError as e:
            if e.code not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                raise

    def names(self) -> set[str]:
        return {link.get_attr("IFLA_IFNAME") for link in self.ipr.get_links()}

    def connected_routes(self) -> list[tuple[str, str]]:
        """(subnet, device) of every directly connected IPv4 route: what a new subnet must not overlap."""
        out = []
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in self.ipr.get_links()}
        for r in self.ipr.get_routes(family=2, table=254):
            dst = r.get_attr("RTA_DST")
            if dst and r["dst_len"] and not r.get_attr("RTA_GATEWAY"):
                out.append((f"{dst}/{r['dst_len']}", names.get(r.get_attr("RTA_OIF"), "?")))
        return out


def set_hairpin(host_ifname: str) -> None:
    """Let a container reach itself through its own published port (packet leaves by the port
    it came in on)."""
    _sysctl(f"/sys/class/net/{host_ifname}/brport/hairpin_mode", "1")
