"""IPv4 address management for bridge networks.

The allocations themselves are not kept in a separate file: each container's state record holds
the addresses of its endpoints, so one atomic write both allocates and records an address and a
crash can never leave an address allocated to nobody (or to two containers). This module is the
pure part: validating a network's subnet / gateway / ip-range and picking the next free address.
Addresses are handed out next-fit (after the last one given) so a just-released address is not
reused at once, which keeps stale ARP entries in peers harmless.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from .errors import Conflict, InvalidArgument

# Docker's default address pools: /16s from 172.17-31, then /20s from 192.168.0.0/16.
DEFAULT_POOLS: tuple[IPv4Network, ...] = tuple(
    [IPv4Network(f"172.{n}.0.0/16") for n in range(17, 32)]
    + [IPv4Network(f"192.168.{n}.0/20") for n in range(0, 256, 16)]
)


@dataclass(frozen=True)
class Pool:
    """The validated address plan of one network."""

    subnet: IPv4Network
    gateway: IPv4Address
    ip_range: IPv4Network

    @property
    def usable(self) -> int:
        """How many container addresses the range holds (network, broadcast and gateway excluded)."""
        n = self.ip_range.num_addresses
        for special in (self.subnet.network_address, self.subnet.broadcast_address, self.gateway):
            if special in self.ip_range:
                n -= 1
        return n

    def reserved(self, ip: IPv4Address) -> bool:
        return ip in (self.subnet.network_address, self.subnet.broadcast_address, self.gateway)

    def allocate(self, used: set[str], network: str, after: str = "") -> str:
        """Next free address after `after` (wrapping) in the ip-range; Conflict when none is left."""
        if len(used) >= self.usable:  # cheap test first: counting costs O(used)
            in_range = sum(1 for u in used if IPv4Address(u) in self.ip_range and not self.reserved(IPv4Address(u)))
            if in_range >= self.usable:
                raise Conflict(f"no available IPv4 addresses on network {network}")
        first = int(self.ip_range.network_address)
        size = self.ip_range.num_addresses
        start = 0
        if after and IPv4Address(after) in self.ip_range:
            start = int(IPv4Address(after)) - first + 1
        for i in range(size):
            ip = IPv4Address(first + (start + i) % size)
            if not self.reserved(ip) and str(ip) not in used:
                return str(ip)
        raise Conflict(f"no available IPv4 addresses on network {network}")

    def check_static(self, ip: str, used: set[str], network: str) -> str:
        """Validate an address the user asked for (`--ip`): inside the subnet, not special, free."""
        try:
            addr = IPv4Address(ip)
        except ValueError:
            raise InvalidArgument(f"invalid IPv4 address {ip!r}") from None
        if addr not in self.subnet:
            raise InvalidArgument(f"address {ip} is not in subnet {self.subnet} of network {network}")
        if self.reserved(addr):
            raise InvalidArgument(f"address {ip} is the network, broadcast or gateway address of network {network}")
        if ip in used:
            raise Conflict(f"address {ip} is already in use on network {network}")
        return ip


def make_pool(subnet: str, gateway: str = "", ip_range: str = "") -> Pool:
    """Validate subnet/gateway/ip-range as Docker does; gateway defaults to the first host address."""
    try:
        net = IPv4Network(subnet, strict=True)
    except ValueError as e:
        raise InvalidArgument(f"invalid subnet {subnet!r}: {e} (use e.g. 192.0.2.0/24)") from None
    if net.prefixlen > 30:
        raise InvalidArgument(f"subnet {subnet} is too small: use a /30 or larger")
    if gateway:
        try:
            gw = IPv4Address(gateway)
        except ValueError:
            raise InvalidArgument(f"invalid gateway {gateway!r}") from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise InvalidArgument(f"gateway {gateway} is not a host address of subnet {subnet}")
    else:
        gw = net.network_address + 1
    if ip_range:
        try:
            rng = IPv4Network(ip_range, strict=True)
        except ValueError as e:
            raise InvalidArgument(f"invalid ip-range {ip_range!r}: {e}") from None
        if not rng.subnet_of(net):
            raise InvalidArgument(f"ip-range {ip_range} is not inside subnet {subnet}")
    else:
        rng = net
    pool = Pool(net, gw, rng)
    if pool.usable <= 0:
        raise InvalidArgument(f"ip-range {rng} leaves no address for containers")
    return pool


def overlaps(a: str, b: str) -> bool:
    return ipaddress.ip_network(a).overlaps(ipaddress.ip_network(b))


def pick_subnet(taken: list[str]) -> str:
    """The first default pool that overlaps none of `taken` (own networks and host routes)."""
    for cand in DEFAULT_POOLS:
        if not any(cand.overlaps(ipaddress.ip_network(t, strict=False)) for t in taken):
            return str(cand)
    raise Conflict("all default address pools overlap existing networks: give --subnet")


def mac_for(ip: str) -> str:
    """Docker's MAC scheme (02:42 + the IPv4 address): stable per address, locally administered."""
    b = IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{x:02x}" for x in b)
