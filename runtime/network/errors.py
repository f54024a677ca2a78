"""Exceptions of the network library: the runtime's own hierarchy (flotilla.runtime.errors).

The network package is part of the runtime layer, so it raises the runtime's NotFound, Conflict
and InvalidArgument (the agent maps them to gRPC codes) and adds one class for failures that are
none of those: the kernel or iptables refusing a change. Every message is one line that says
what to fix.
"""
from __future__ import annotations

from ..errors import Conflict, InvalidArgument, NotFound, RuntimeFault

__all__ = ["NetworkError", "NotFound", "Conflict", "InvalidArgument", "RuntimeFault"]


class NetworkError(RuntimeFault):
    """A network change the kernel or iptables refused (the message carries their reason)."""
