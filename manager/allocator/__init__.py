"""The allocator (SwarmKit's name for it): what a network and a service's attachments need
before anything runs — the network's address plan, and attachments resolved to network ids."""
from .networks import AllocationError, allocate_network, resolve_attachments

__all__ = ["AllocationError", "allocate_network", "resolve_attachments"]
