"""Cluster networks: their driver, options and address plan, and services' attachments to them.

A cluster network with the `bridge` driver is node-local in scope: every node that runs a
task on it builds a local bridge network of that name from the plan chosen here. The plan is
chosen once, in the manager, so every node builds the same subnet and gateway, and no two
cluster networks overlap. The addresses of tasks are not allocated here: each node's own IPAM
hands them out from its bridge (it already survives agent restarts), so the manager keeps no
second copy that could disagree with the nodes.

Allocation runs in the control API before the network is written, so a network is never
stored without its plan. Two managers creating networks at the same instant could still pick
the same default subnet (the same race the store's name check has); within one manager a lock
in the control API serialises it.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from flotilla.proto import objects_pb2 as pb

from ..store import InvalidArgument, NotFound


class AllocationError(ValueError):
    """A network or attachment that cannot be accepted; the message is shown to the user as is."""


# Docker swarm's default address pool: 10.0.0.0/8 cut into /24s. Local networks of the nodes
# come from 172.17-31.x and 192.168.x (the runtime's pools), so the two never meet by default.
DEFAULT_POOL = ipaddress.IPv4Network("10.0.0.0/8")
DEFAULT_PREFIX = 24
OPT_MTU = "com.docker.network.driver.mtu"
OPT_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
CLUSTER_OPTIONS = (OPT_MTU, OPT_MASQUERADE)  # a bridge name would be the same on every node: not offered
RESERVED_NAMES = ("bridge", "host", "none")  # every node has these local networks
ALIAS_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


def allocate_network(spec: pb.NetworkSpec, existing: Iterable[pb.Network]) -> list[pb.IPAMConfig]:
    """Check a new network's driver and options and choose its address plan.

    The user's subnet is kept (gateway defaulting to its first address); without one, the first
    /24 of the default pool that overlaps no other cluster network is taken.
    """
    if spec.annotations.name in RESERVED_NAMES:
        raise AllocationError(f"network name {spec.annotations.name} is reserved for the nodes' own networks: choose another")
    driver = spec.driver or "bridge"
    if driver == "overlay":
        raise AllocationError("the overlay driver is not built yet (VXLAN networks across nodes are a later issue): "
                              "use --driver bridge for a network local to each node")
    if driver != "bridge":
        raise AllocationError(f"network driver {driver!r} is not supported: use bridge")
    unknown = sorted(set(spec.options) - set(CLUSTER_OPTIONS))
    if unknown:
        raise AllocationError(f"network option {unknown[0]!r} is not supported on cluster networks: "
                              f"use {' or '.join(CLUSTER_OPTIONS)}")
    if len(spec.ipam) > 1:
        raise AllocationError("a cluster network takes one subnet: give --subnet once")
    taken = [(ipaddress.ip_network(c.subnet), n.spec.annotations.name) for n in existing for c in n.ipam if c.subnet]
    if spec.ipam:
        user = spec.ipam[0]
        subnet = ipaddress.ip_network(user.subnet)
        if subnet.version != 4:
            raise AllocationError(f"subnet {subnet} is not IPv4: bridge networks are IPv4 only")
        if subnet.num_addresses < 4:
            raise AllocationError(f"subnet {subnet} is too small: use a /30 or larger")
        for other, name in taken:
            if subnet.overlaps(other):
                raise AllocationError(f"subnet {subnet} overlaps {other} of network {name}: choose another --subnet")
        gateway = user.gateway or str(next(subnet.hosts()))
        return [pb.IPAMConfig(subnet=str(subnet), gateway=gateway, range=user.range)]
    for candidate in DEFAULT_POOL.subnets(new_prefix=DEFAULT_PREFIX):
        if not any(candidate.overlaps(other) for other, _ in taken):
            return [pb.IPAMConfig(subnet=str(candidate), gateway=str(next(candidate.hosts())))]
    raise AllocationError(f"the default address pool {DEFAULT_POOL} is used up: give --subnet")


def resolve_attachments(spec: pb.TaskSpec, find) -> None:
    """Turn each attachment's target (name, id or unique id prefix) into the network's id.

    `find(ref)` is the store's lookup (raises NotFound). Docker's CLI resolves names to ids
    before it sends a service; doing it here gives programs the same guarantee, and a
    network renamed or recreated later never captures an existing service.
    """
    seen: set[str] = set()
    for attachment in spec.networks:
        try:
            network = find(attachment.target)
        except (NotFound, InvalidArgument):
            raise AllocationError(f"network {attachment.target!r} not found: create it first with "
                                  "`swarmctl network create --scope swarm NAME`") from None
        if network.id in seen:
            raise AllocationError(f"network {network.spec.annotations.name} is given twice: attach it once")
        seen.add(network.id)
        attachment.target = network.id
        for alias in attachment.aliases:
            if not ALIAS_RE.match(alias):
                raise AllocationError(f"network alias {alias!r} is invalid: use 1-63 letters, digits, '_', '.' or '-'")
