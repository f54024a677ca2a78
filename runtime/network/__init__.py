"""Container networking on one host: bridge networks, IPAM, NAT, published ports, DNS.

The integration surface (documented in docs/network.md) is NetworkManager, the records it
returns, parse_port_spec and the exception classes; everything else is internal.
"""
from .errors import Conflict, InvalidArgument, NetworkError, NotFound
from .manager import NetworkManager
from .models import Endpoint, NetworkInfo, PortMapping
from .ports import parse_port_spec

__all__ = ["NetworkManager", "NetworkInfo", "Endpoint", "PortMapping", "parse_port_spec",
           "NetworkError", "NotFound", "Conflict", "InvalidArgument"]
