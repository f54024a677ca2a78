"""Published ports as DNAT map elements in a private nftables table of the instance.

A published port is one element of a map (`host port -> container address . port`, per
protocol, and per host address for `-p IP:PORT:PORT`), so publishing or releasing a
container's ports changes only its own elements, through libnftables in-process: ~0.3 ms
instead of a full `iptables-restore` of the instance's chains (~36 ms with its two
`iptables-save` calls). See docs/network.md, "Performance".

Why a private table is right for NAT while the filter rules must stay in iptables (firewall.py):
a DROP in any base chain is final, so filter accepts must sit in iptables' own FORWARD chain,
but a DNAT needs no other table's consent. The first NAT binding made for a connection wins;
our chains hook prerouting and output at dstnat priority, like iptables' nat table.

Crash safety: `sync` replaces the whole table in one batch (add, delete, define: atomic) from
the manager's records; `add`/`remove` fall back to it whenever an incremental change is refused
(an element already gone after a crash, a table flushed by hand). The table exists exactly
while the instance publishes at least one port.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import NetworkError
from .names import Names
from .nft import Nft

_ANY = ("", "0.0.0.0")


@dataclass(frozen=True)
class NatPort:
    """One DNAT: [host_ip:]host_port/proto -> container_ip:container_port."""

    host_ip: str
    host_port: int
    proto: str
    container_ip: str
    container_port: int

    @property
    def map(self) -> str:
        return f"{self.proto}_{'any' if self.host_ip in _ANY else 'ip'}"

    @property
    def key(self) -> str:
        return str(self.host_port) if self.host_ip in _ANY else f"{self.host_ip} . {self.host_port}"

    @property
    def element(self) -> str:
        return f"{self.key} : {self.container_ip} . {self.container_port}"


MAPS = {"tcp_ip": "ipv4_addr . inet_service", "tcp_any": "inet_service",
        "udp_ip": "ipv4_addr . inet_service", "udp_any": "inet_service"}


class PortNat:
    """The DNAT table of one instance."""

    def __init__(self, names: Names) -> None:
        self.table = names.nft_table
        self._nft: Nft | None = None
        self._present = False  # known to exist with our layout (after a sync of ours)

    def render(self, ports: list[NatPort]) -> str:
        """The complete table, in nft syntax."""
        lines = [f"table ip {self.table} {{"]
        for name, key in MAPS.items():
            elements = [p.element for p in ports if p.map == name]
            body = f" elements = {{ {', '.join(elements)} }} ;" if elements else ""
            lines.append(f"  map {name} {{ type {key} : ipv4_addr . inet_service ;{body} }}")
        lines.append("  chain ports {")
        for proto in ("tcp", "udp"):
            lines.append(f"    ip protocol {proto} dnat ip to ip daddr . {proto} dport map @{proto}_ip")
            lines.append(f"    ip protocol {proto} dnat ip to {proto} dport map @{proto}_any")
        lines.append("  }")
        # Only packets to one of the host's own addresses (as iptables' `addrtype --dst-type LOCAL`).
        lines.append("  chain prerouting { type nat hook prerouting priority dstnat ; fib daddr type local jump ports ; }")
        lines.append("  chain output { type nat hook output priority -100 ; fib daddr type local jump ports ; }")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def sync(self, ports: list[NatPort]) -> None:
        """Make the table exactly `ports` (one atomic batch); delete it when there are none."""
        if not ports:
            self.teardown()
            return
        self._run(f"add table ip {self.table}\ndelete table ip {self.table}\n" + self.render(ports))
        self._present = True

    def add(self, new: list[NatPort], everything: list[NatPort]) -> None:
        """Add `new` (already part of `everything`, the instance's complete set)."""
        if not self._present:
            self.sync(everything)
            return
        try:
            self._run(self._elements("add", new))
        except NetworkError:
            self.sync(everything)

    def remove(self, gone: list[NatPort], everything: list[NatPort]) -> None:
        """Remove `gone` (no longer part of `everything`); idempotent."""
        if not everything or not self._present:
            self.sync(everything)
            return
        try:
            self._run(self._elements("delete", gone))
        except NetworkError:  # e.g. already deleted before a crash: rebuild from the records
            self.sync(everything)

    def teardown(self) -> None:
        """Delete the table; a no-op when it does not exist."""
        self._run(f"add table ip {self.table}\ndelete table ip {self.table}\n")
        self._present = False

    def close(self) -> None:
        if self._nft is not None:
            self._nft.close()
            self._nft = None
        self._present = False

    def _elements(self, verb: str, ports: list[NatPort]) -> str:
        out = []
        for name in MAPS:
            keys = [(p.element if verb == "add" else p.key) for p in ports if p.map == name]
            if keys:
                out.append(f"{verb} element ip {self.table} {name} {{ {', '.join(keys)} }}")
        return "\n".join(out) + "\n"

    def _run(self, commands: str) -> str:
        if self._nft is None:
            self._nft = Nft()
        return self._nft.run(commands)
