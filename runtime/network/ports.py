"""Published ports: parsing Docker's `-p` syntax and holding the host ports.

Flotilla forwards published ports with DNAT only (no userland proxy). To notice a port that
another program (or another agent) already uses, and to make "host port 0" pick a free port,
each published port is also *bound* by a socket that the manager holds for as long as the port
is published (TCP: bound, never listening, so it takes no connections; the DNAT rule catches
the traffic first). A port already bound anywhere on the host therefore raises Conflict, as
Docker's "port is already allocated".
"""
from __future__ import annotations

import errno
import ipaddress
import socket

from .errors import Conflict, InvalidArgument
from .models import PortMapping

PROTOCOLS = ("tcp", "udp")


def _port_range(text: str, what: str, allow_zero: bool) -> tuple[int, int]:
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    except ValueError:
        raise InvalidArgument(f"invalid {what} port {text!r}: use a number or a range like 8000-8010") from None
    low_bound = 0 if allow_zero else 1
    if not (low_bound <= lo <= 65535 and low_bound <= hi <= 65535) or hi < lo:
        raise InvalidArgument(f"invalid {what} port {text!r}: ports are 1-65535, ranges low-high")
    return lo, hi


def parse_port_spec(spec: str) -> list[PortMapping]:
    """Parse one `-p` value as Docker does: [IP:][HOST:]CONTAINER[/PROTO], ports may be ranges.

    "80" publishes 80 on a random host port; "8080:80"; "127.0.0.1:8080:80/udp";
    "127.0.0.1::80" (random port on that address); "8000-8001:80-81" maps pairwise;
    "8000-8010:80" takes one free port from the host range.
    """
    body, slash, proto = spec.rpartition("/") if "/" in spec else (spec, "", "tcp")
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise InvalidArgument(f"invalid protocol {proto!r} in port spec {spec!r}: use tcp or udp")
    if body.startswith("["):
        raise InvalidArgument(f"IPv6 host addresses are not supported in port spec {spec!r}")
    parts = body.split(":")
    if len(parts) == 1:
        host_ip, host, cont = "", "", parts[0]
    elif len(parts) == 2:
        host_ip, host, cont = "", parts[0], parts[1]
    elif len(parts) == 3:
        host_ip, host, cont = parts
    else:
        raise InvalidArgument(f"invalid port spec {spec!r}: use [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]")
    if host_ip:
        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise InvalidArgument(f"invalid host IP {host_ip!r} in port spec {spec!r}") from None
    if not cont:
        raise InvalidArgument(f"no container port in port spec {spec!r}")
    c_lo, c_hi = _port_range(cont, "container", allow_zero=False)
    if not host:
        return [PortMapping(p, proto, host_ip) for p in range(c_lo, c_hi + 1)]
    h_lo, h_hi = _port_range(host, "host", allow_zero=True)
    if c_lo == c_hi:
        if h_lo == h_hi:
            return [PortMapping(c_lo, proto, host_ip, h_lo)]
        return [PortMapping(c_lo, proto, host_ip, h_lo, h_hi)]
    if h_hi - h_lo != c_hi - c_lo:
        raise InvalidArgument(f"invalid port spec {spec!r}: host and container port ranges differ in length")
    return [PortMapping(c_lo + i, proto, host_ip, h_lo + i) for i in range(c_hi - c_lo + 1)]


def reserve(mapping: PortMapping) -> tuple[socket.socket, PortMapping]:
    """Bind the host port of `mapping` (picking one when 0 or a range); Conflict when taken."""
    kind = socket.SOCK_STREAM if mapping.proto == "tcp" else socket.SOCK_DGRAM
    addr = mapping.host_ip or "0.0.0.0"
    if mapping.host_port_end:
        candidates = list(range(mapping.host_port, mapping.host_port_end + 1))
    else:
        candidates = [mapping.host_port]
    for port in candidates:
        sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
        try:
            sock.bind((addr, port))
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                continue
            if e.errno == errno.EADDRNOTAVAIL:
                raise InvalidArgument(f"host IP {addr} is not an address of this host") from None
            raise
        taken = sock.getsockname()[1]
        return sock, PortMapping(mapping.container_port, mapping.proto, mapping.host_ip, taken)
    where = f"{addr}:{mapping.host_port}" + (f"-{mapping.host_port_end}" if mapping.host_port_end else "")
    raise Conflict(f"Bind for {where}/{mapping.proto} failed: port is already allocated")
