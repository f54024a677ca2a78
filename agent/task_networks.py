"""Cluster networks on this node: built when a task needs one, removed when no task uses it.

A cluster network with the `bridge` driver is node-local (docs/cluster-agent.md, "Networks"):
the node builds a local bridge network with the cluster network's name and the address plan
the manager chose, labelled with the cluster network's id, so it is recognised again after an
agent restart and never confused with a network a user made by hand. Task addresses come from
this node's own IPAM, which survives agent restarts.

One lock orders building, removing and the creation of containers on cluster networks: a
task's container is created while its networks are marked in use, so a removal never pulls a
network from under a container being created, and two tasks never build the same network
twice. Tasks without networks never touch any of this.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

from flotilla.proto import objects_pb2 as pb
from flotilla.runtime import errors
from flotilla.runtime.network import NetworkInfo
from flotilla.runtime.runtime import Runtime

log = logging.getLogger("flotilla.agent.networks")

LABEL_NETWORK_ID = "com.docker.swarm.network.id"


@dataclass(frozen=True)
class Attachment:
    """One network of a task as the container needs it: the local network's name and the aliases."""

    network: str
    aliases: list[str]


class TaskNetworks:
    """See the module docstring."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._lock = asyncio.Lock()
        self._creating: Counter[str] = Counter()  # network name -> containers being created on it

    @contextlib.asynccontextmanager
    async def attached(self, task: pb.Task) -> AsyncIterator[list[Attachment]]:
        """Build the task's networks if absent and keep them while its container is created.

        Raises the runtime's error (the task is then REJECTED with it) when a network cannot be
        built or a local network of the same name is not this cluster network.
        """
        if not task.spec.networks:
            yield []
            return
        by_id = {a.network.id: a for a in task.networks}
        missing = [c.target for c in task.spec.networks if c.target not in by_id]
        if missing:
            raise errors.NotFound(f"network {missing[0]} is not known to the manager any more: it was removed")
        wanted = [by_id[c.target] for c in task.spec.networks]
        names = [a.network.spec.annotations.name for a in wanted]
        async with self._lock:
            for a in wanted:
                await asyncio.to_thread(self._ensure, a.network)
            self._creating.update(names)
        try:
            yield [Attachment(a.network.spec.annotations.name, list(a.aliases)) for a in wanted]
        finally:
            self._creating.subtract(names)

    async def remove_unused(self) -> None:
        """Remove the cluster networks no container on this node is configured for any more."""
        async with self._lock:
            await asyncio.to_thread(self._remove_unused)

    # -- in a thread, under the lock -------------------------------------------------------
    def _ensure(self, network: pb.Network) -> NetworkInfo:
        """The local network of a cluster network: the existing one if it is that network, else a new one."""
        nm = self._rt.net.nm
        name = network.spec.annotations.name
        ipam = network.ipam[0] if network.ipam else pb.IPAMConfig()
        try:
            local = nm.network(name)
        except errors.NotFound:
            info = nm.create_network(name, "bridge", ipam.subnet, ipam.gateway, ipam.range, network.spec.internal,
                                     dict(network.spec.options), {LABEL_NETWORK_ID: network.id})
            log.info("network %s (%s) built for the cluster network %s", name, info.subnet, network.id[:12])
            return info
        if local.labels.get(LABEL_NETWORK_ID) != network.id:
            raise errors.Conflict(f"a local network named {name} already exists on this node and is not the cluster "
                                  f"network {network.id[:12]}: remove or rename the local one")
        if (local.subnet, local.gateway, local.internal) != (ipam.subnet, ipam.gateway, network.spec.internal):
            raise errors.Conflict(f"local network {name} has subnet {local.subnet} (gateway {local.gateway}, internal "
                                  f"{local.internal}), not the cluster network's {ipam.subnet} ({ipam.gateway}, "
                                  f"{network.spec.internal}): remove the local one")
        return local

    def _remove_unused(self) -> None:
        nm = self._rt.net.nm
        for net in nm.networks():
            if LABEL_NETWORK_ID not in net.labels or self._creating[net.name] > 0:
                continue
            try:
                if self._rt.network_users(net.name):
                    continue
                nm.remove_network(net.id)
            except errors.RuntimeFault as exc:  # e.g. a container still running on it: tried again next time
                log.warning("network %s stays: %s", net.name, exc)
                continue
            log.info("network %s removed: no task on this node uses it", net.name)
