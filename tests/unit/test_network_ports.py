"""parse_port_spec follows Docker's -p syntax; bad specs fail with a message that says what to fix."""
import socket

import pytest

from flotilla.runtime.network import Conflict, InvalidArgument, PortMapping, parse_port_spec
from flotilla.runtime.network.ports import reserve


@pytest.mark.parametrize("spec, expected", [
    ("80", [PortMapping(80)]),
    ("8080:80", [PortMapping(80, "tcp", "", 8080)]),
    ("127.0.0.1:8080:80/udp", [PortMapping(80, "udp", "127.0.0.1", 8080)]),
    ("127.0.0.1::80", [PortMapping(80, "tcp", "127.0.0.1", 0)]),
    ("80/UDP", [PortMapping(80, "udp")]),
    ("8000-8001:80-81", [PortMapping(80, "tcp", "", 8000), PortMapping(81, "tcp", "", 8001)]),
    ("8000-8010:80", [PortMapping(80, "tcp", "", 8000, 8010)]),
    ("80-82", [PortMapping(80), PortMapping(81), PortMapping(82)]),
])
def test_valid_specs(spec, expected):
    assert parse_port_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("80/sctp", "protocol"),
    ("abc", "container port"),
    ("0", "ports are 1-65535"),
    ("70000", "ports are 1-65535"),
    ("8000-8002:80-81", "differ in length"),
    ("300.1.1.1:80:80", "host IP"),
    ("[::1]:80:80", "IPv6"),
    ("1:2:3:4", "use [IP:]"),
    ("8080:", "no container port"),
    ("90-80", "ranges low-high"),
])
def test_invalid_specs(spec, message):
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[")):
        parse_port_spec(spec)


def test_reserve_picks_a_free_port_and_detects_a_taken_one():
    sock, got = reserve(PortMapping(80, "tcp", "127.0.0.1", 0))
    try:
        assert got.host_port > 0 and got.host_port_end == 0
        with pytest.raises(Conflict, match="already allocated"):
            reserve(PortMapping(80, "tcp", "127.0.0.1", got.host_port))
        # the same number over UDP is a different port
        usock, _ = reserve(PortMapping(80, "udp", "127.0.0.1", got.host_port))
        usock.close()
    finally:
        sock.close()


def test_reserve_from_a_range_skips_taken_ports():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    try:
        sock, got = reserve(PortMapping(80, "tcp", "127.0.0.1", port, min(port + 50, 65535)))
        sock.close()
        assert port < got.host_port <= port + 50 and got.host_port_end == 0
    finally:
        blocker.close()
