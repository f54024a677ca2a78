"""Parsing of flag values: sizes, CPUs, durations, key=value pairs."""
from __future__ import annotations

import re

from flotilla.proto import objects_pb2 as pb

from .connect import ClusterError

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def size(text: str) -> int:
    """`64M`, `1g`, `1048576` to bytes (powers of 1024, as Docker's --memory)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ClusterError(f"invalid size {text!r}: use a number with an optional k, m, g or t suffix")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def nano_cpus(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ClusterError(f"invalid CPU count {text!r}: use a number such as 0.5") from None
    if value < 0:
        raise ClusterError(f"invalid CPU count {text!r}: must not be negative")
    return int(round(value * 1e9))


def duration_ns(text: str) -> int:
    """`5s`, `200ms`, `1m`, `1h` to nanoseconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ClusterError(f"invalid duration {text!r}: use e.g. 5s, 200ms, 1m")
    return int(float(m.group(1)) * {"ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}[m.group(2)])


def pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not key:
        raise ClusterError(f"invalid {what} {text!r}: use key=value")
    return key, value


def network_attachment(text: str) -> pb.NetworkAttachmentConfig:
    """`--network NAME` or Docker's long form `name=NAME,alias=A[,alias=B]`."""
    if "=" not in text:
        if not text:
            raise ClusterError("invalid --network '': give a network name")
        return pb.NetworkAttachmentConfig(target=text)
    out = pb.NetworkAttachmentConfig()
    for field in text.split(","):
        key, _, value = field.partition("=")
        if key in ("name", "target") and value:
            out.target = value
        elif key == "alias" and value:
            out.aliases.append(value)
        else:
            raise ClusterError(f"invalid --network field {field!r}: use name=NETWORK and alias=ALIAS")
    if not out.target:
        raise ClusterError(f"invalid --network {text!r}: name=NETWORK is required")
    return out


_PORT_SHORT = re.compile(r"^(?:(\d+):)?(\d+)(?:/(tcp|udp))?$")
_PROTOCOLS = {"tcp": pb.PortConfig.TCP, "udp": pb.PortConfig.UDP}


def _port_number(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ClusterError(f"invalid {what} port {text!r}: use 1-65535")
    return int(text)


def port_config(text: str) -> pb.PortConfig:
    """`-p published=8080,target=80,mode=host[,protocol=udp]` or `-p 8080:80[/udp]`.

    The short form means mode=ingress in Docker, whose routing mesh is not built here, so it is
    taken as host mode only when the long form says so; the manager refuses ingress in one line.
    """
    out = pb.PortConfig(publish_mode=pb.PortConfig.INGRESS)
    m = _PORT_SHORT.match(text)
    if m:
        if m.group(1):
            out.published_port = _port_number(m.group(1), "published")
        out.target_port = _port_number(m.group(2), "target")
        out.protocol = _PROTOCOLS[m.group(3) or "tcp"]
        return out
    for field in text.split(","):
        key, _, value = field.partition("=")
        if key == "published":
            out.published_port = _port_number(value, "published")
        elif key == "target":
            out.target_port = _port_number(value, "target")
        elif key == "mode" and value in ("host", "ingress"):
            out.publish_mode = pb.PortConfig.HOST if value == "host" else pb.PortConfig.INGRESS
        elif key == "protocol" and value in _PROTOCOLS:
            out.protocol = _PROTOCOLS[value]
        else:
            raise ClusterError(f"invalid --publish field {field!r}: use published=N,target=N,mode=host,protocol=tcp|udp")
    if not out.target_port:
        raise ClusterError(f"invalid --publish {text!r}: target=PORT is required")
    return out
