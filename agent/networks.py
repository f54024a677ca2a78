"""The network RPCs of the agent's local API (`network ...` and `port` of swarmctl).

A mixin of `RuntimeService`: the handlers use its `_call` plumbing (runtime call in a thread,
failures as one gRPC status line). The work is in `flotilla.runtime.netwiring` and the
runtime's `NetworkManager` (`runtime.net.nm`).
"""
from __future__ import annotations

import json
from typing import Any

from flotilla.proto import runtime_pb2 as pb
from flotilla.runtime.network import NetworkInfo

from .task_networks import LABEL_NETWORK_ID


def network_to_proto(info: NetworkInfo) -> pb.NetworkInfo:
    """Scope `swarm` for a node's copy of a cluster network (as Docker lists those on workers)."""
    scope = "swarm" if LABEL_NETWORK_ID in info.labels else "local"
    return pb.NetworkInfo(id=info.id, name=info.name, driver=info.driver, subnet=info.subnet, gateway=info.gateway,
                          ip_range=info.ip_range, internal=info.internal, options=dict(info.options),
                          labels=dict(info.labels), created=info.created, scope=scope)


class NetworkHandlers:
    """CreateNetwork, ListNetworks, InspectNetwork, RemoveNetwork, Connect/DisconnectNetwork, Port."""

    rt: Any
    _call: Any

    async def CreateNetwork(self, request, context):
        nm = self.rt.net.nm
        info = await self._call(context, nm.create_network, request.name, request.driver or "bridge", request.subnet,
                                request.gateway, request.ip_range, request.internal, dict(request.options),
                                dict(request.labels))
        return network_to_proto(info)

    async def ListNetworks(self, request, context):
        infos = await self._call(context, self.rt.net.nm.networks)
        return pb.ListNetworksResponse(networks=[network_to_proto(n) for n in infos])

    async def InspectNetwork(self, request, context):
        doc = await self._call(context, self.rt.network_inspect, request.ref)
        return pb.JsonDocument(json=json.dumps(doc))

    async def RemoveNetwork(self, request, context):
        await self._call(context, self.rt.net.nm.remove_network, request.ref)
        return pb.Empty()

    async def ConnectNetwork(self, request, context):
        await self._call(context, self.rt.network_connect, request.network, request.container, request.ip,
                         list(request.aliases))
        return pb.Empty()

    async def DisconnectNetwork(self, request, context):
        await self._call(context, self.rt.network_disconnect, request.network, request.container)
        return pb.Empty()

    async def Port(self, request, context):
        ports = await self._call(context, self.rt.ports, request.ref)
        return pb.PortResponse(ports=[pb.PortBinding(container_port=p.container_port, proto=p.proto,
                                                     host_ip=p.host_ip or "0.0.0.0", host_port=p.host_port)
                                      for p in ports])
