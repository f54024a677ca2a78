"""Plain records exchanged through the integration surface and persisted as JSON.

They are frozen dataclasses so that a caller holding one can never change the manager's state
behind its back; `to_dict` / `from_dict` are the on-disk form.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PortMapping:
    """One published port: HOST_IP:HOST_PORT -> CONTAINER_PORT/PROTO.

    host_port 0 means "pick a free port"; host_port..host_port_end (when host_port_end is set)
    is a range to pick one free port from, as in Docker's `-p 8000-8010:80`. `publish` returns
    mappings with the port it actually took and host_port_end 0.
    """

    container_port: int
    proto: str = "tcp"
    host_ip: str = ""
    host_port: int = 0
    host_port_end: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PortMapping":
        return cls(**d)

    def __str__(self) -> str:
        host = f"{self.host_ip or '0.0.0.0'}:{self.host_port}"
        if self.host_port_end:
            host += f"-{self.host_port_end}"
        return f"{host}->{self.container_port}/{self.proto}"


@dataclass(frozen=True)
class Endpoint:
    """A container's attachment to one network: its interface, address and DNS names."""

    container_id: str
    network_id: str
    network: str
    ifname: str = ""          # name inside the container (eth0, eth1, ...)
    host_ifname: str = ""     # the veth end on the bridge
    ip: str = ""
    prefixlen: int = 0
    gateway: str = ""
    mac: str = ""
    mtu: int = 0
    aliases: tuple[str, ...] = ()
    name: str = ""            # the container's name, resolvable on user networks

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["aliases"] = list(self.aliases)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Endpoint":
        return cls(**{**d, "aliases": tuple(d.get("aliases", ()))})


@dataclass(frozen=True)
class NetworkInfo:
    """A network as `docker network inspect` shows it, plus the kernel names Flotilla chose."""

    id: str
    name: str
    driver: str                # bridge, host or null
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    bridge: str = ""           # Linux bridge device name ("" for host / none)
    mtu: int = 1500
    masquerade: bool = True
    created: str = ""
    builtin: bool = False      # bridge, host, none: always present, never removable

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NetworkInfo":
        return cls(**d)
