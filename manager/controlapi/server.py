"""The Control gRPC service: users' reads and writes of the desired state.

Reads come from the store's cache. Writes are validated first, then written with
compare-and-swap on the version the user read, so two users cannot overwrite each other: a
stale version is ABORTED with "update out of sequence" (read again and retry), as in SwarmKit.
"""
from __future__ import annotations

import asyncio
import functools
import logging

import grpc

from flotilla.proto import control_pb2 as cpb
from flotilla.proto import control_pb2_grpc as cgrpc
from flotilla.proto import objects_pb2 as pb

from .. import metrics
from ..allocator import AllocationError, allocate_network, resolve_attachments
from ..store import Conflict, InvalidArgument, NotFound, NotLeader, Store, StoreError, Unavailable, name_of
from .filters import matches
from .validation import (ValidationError, check_cluster_spec, check_network_spec, check_node_spec,
                         check_service_spec, check_service_update)

log = logging.getLogger(__name__)

_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (AllocationError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.ABORTED),
    (NotLeader, grpc.StatusCode.UNAVAILABLE),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (StoreError, grpc.StatusCode.INTERNAL),
]


class Refused(Exception):
    """A request refused with a specific status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def rpc_method(fn):
    """Map the store's and validation's errors to gRPC codes with a one-line message."""
    @functools.wraps(fn)
    async def wrapper(self, request, context):
        try:
            result = await fn(self, request)
        except Refused as e:
            metrics.CONTROL_REQUESTS.labels(fn.__name__, e.code.name).inc()
            await context.abort(e.code, str(e))
        except Exception as e:  # noqa: BLE001 - mapped below, unknown ones are INTERNAL
            code = next((c for cls, c in _CODES if isinstance(e, cls)), grpc.StatusCode.INTERNAL)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("control: %s failed", fn.__name__)
            metrics.CONTROL_REQUESTS.labels(fn.__name__, code.name).inc()
            await context.abort(code, str(e) or type(e).__name__)
        metrics.CONTROL_REQUESTS.labels(fn.__name__, "OK").inc()
        return result
    return wrapper


def _check_version(kind: str, current, version: pb.Version) -> None:
    if version.index != current.meta.version.index:
        raise Refused(grpc.StatusCode.ABORTED, f"update out of sequence: {kind} {current.id} is at version "
                      f"{current.meta.version.index}, the request has {version.index}; read it again and retry")


class Control(cgrpc.ControlServicer):
    """See the module docstring."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._network_lock = asyncio.Lock()  # one allocation at a time: two networks never get one subnet

    def _name_taken(self, kind: str, name: str, except_id: str = "") -> None:
        for obj in self.store.list(kind):
            if obj.id != except_id and name_of(kind, obj) == name and not getattr(obj, "pending_delete", False):
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"{kind} name {name!r} is already in use by {kind} {obj.id}")

    async def _update(self, kind: str, obj):
        try:
            return await self.store.update(kind, obj)
        except Conflict:
            raise Refused(grpc.StatusCode.ABORTED, f"update out of sequence: {kind} {obj.id} changed meanwhile; read it again and retry") from None

    # -- nodes --------------------------------------------------------------------------------

    @rpc_method
    async def GetNode(self, request: cpb.GetNodeRequest) -> cpb.GetNodeResponse:
        return cpb.GetNodeResponse(node=self.store.find("node", request.node_id))

    @rpc_method
    async def ListNodes(self, request: cpb.ListNodesRequest) -> cpb.ListNodesResponse:
        nodes = [n for n in self.store.list("node") if matches("node", n, request.filters)
                 and (not request.roles or n.role in request.roles)]
        return cpb.ListNodesResponse(nodes=nodes)

    @rpc_method
    async def UpdateNode(self, request: cpb.UpdateNodeRequest) -> cpb.UpdateNodeResponse:
        current = self.store.find("node", request.node_id)
        check_node_spec(request.spec)
        _check_version("node", current, request.node_version)
        node = pb.Node()
        node.CopyFrom(current)
        node.spec.CopyFrom(request.spec)
        return cpb.UpdateNodeResponse(node=await self._update("node", node))

    @rpc_method
    async def RemoveNode(self, request: cpb.RemoveNodeRequest) -> cpb.RemoveNodeResponse:
        node = self.store.find("node", request.node_id)
        if node.status.state != pb.NodeStatus.DOWN and not request.force:
            state = pb.NodeStatus.State.Name(node.status.state)
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"node {node.id} is {state}, not DOWN: stop its agent first, or remove it with --force")
        try:
            await self.store.delete("node", node.id, version=node.meta.version.index)
        except Conflict:
            raise Refused(grpc.StatusCode.ABORTED, f"node {node.id} changed meanwhile; retry") from None
        return cpb.RemoveNodeResponse()

    # -- tasks --------------------------------------------------------------------------------

    @rpc_method
    async def GetTask(self, request: cpb.GetTaskRequest) -> cpb.GetTaskResponse:
        return cpb.GetTaskResponse(task=self.store.find("task", request.task_id))

    @rpc_method
    async def ListTasks(self, request: cpb.ListTasksRequest) -> cpb.ListTasksResponse:
        if request.service_ids:
            tasks = [t for sid in request.service_ids for t in self.store.tasks_of_service(sid)]
        elif request.node_ids:
            tasks = [t for nid in request.node_ids for t in self.store.tasks_of_node(nid)]
        else:
            tasks = self.store.list("task")
        nodes, states = set(request.node_ids), set(request.desired_states)
        out = []
        for t in tasks:
            if nodes and t.node_id not in nodes or states and t.desired_state not in states:
                continue
            if request.up_to_date:
                service = self.store.get("service", t.service_id)
                if service is None or t.spec_version != service.spec_version:
                    continue
            if matches("task", t, request.filters):
                out.append(t)
        return cpb.ListTasksResponse(tasks=out)

    # -- services -----------------------------------------------------------------------------

    @rpc_method
    async def CreateService(self, request: cpb.CreateServiceRequest) -> cpb.CreateServiceResponse:
        spec = request.spec
        check_service_spec(spec)
        resolve_attachments(spec.task, lambda ref: self.store.find("network", ref))
        self._name_taken("service", spec.annotations.name)
        service = pb.Service(spec=spec)
        service.spec_version.index = 1
        return cpb.CreateServiceResponse(service=await self.store.create("service", service))

    @rpc_method
    async def GetService(self, request: cpb.GetServiceRequest) -> cpb.GetServiceResponse:
        return cpb.GetServiceResponse(service=self.store.find("service", request.service_id))

    @rpc_method
    async def UpdateService(self, request: cpb.UpdateServiceRequest) -> cpb.UpdateServiceResponse:
        current = self.store.find("service", request.service_id)
        if current.pending_delete:
            raise NotFound(f"service {current.id} is being removed")
        check_service_spec(request.spec)
        check_service_update(current.spec, request.spec)
        resolve_attachments(request.spec.task, lambda ref: self.store.find("network", ref))
        _check_version("service", current, request.service_version)
        service = pb.Service()
        service.CopyFrom(current)
        service.spec.CopyFrom(request.spec)
        if current.spec.task != request.spec.task:
            # Only a change of what runs replaces tasks; scaling keeps them.
            service.spec_version.index = current.spec_version.index + 1
        return cpb.UpdateServiceResponse(service=await self._update("service", service))

    @rpc_method
    async def RemoveService(self, request: cpb.RemoveServiceRequest) -> cpb.RemoveServiceResponse:
        current = self.store.find("service", request.service_id)
        if current.pending_delete:
            return cpb.RemoveServiceResponse()
        service = pb.Service()
        service.CopyFrom(current)
        service.pending_delete = True  # the orchestrator removes its tasks, then the service
        await self._update("service", service)
        return cpb.RemoveServiceResponse()

    @rpc_method
    async def ListServices(self, request: cpb.ListServicesRequest) -> cpb.ListServicesResponse:
        return cpb.ListServicesResponse(services=[s for s in self.store.list("service")
                                                  if not s.pending_delete and matches("service", s, request.filters)])

    # -- networks -----------------------------------------------------------------------------

    @rpc_method
    async def CreateNetwork(self, request: cpb.CreateNetworkRequest) -> cpb.CreateNetworkResponse:
        check_network_spec(request.spec)
        async with self._network_lock:
            self._name_taken("network", request.spec.annotations.name)
            network = pb.Network(spec=request.spec)
            network.spec.driver = network.spec.driver or "bridge"
            network.ipam.extend(allocate_network(network.spec, self.store.list("network")))
            return cpb.CreateNetworkResponse(network=await self.store.create("network", network))

    @rpc_method
    async def GetNetwork(self, request: cpb.GetNetworkRequest) -> cpb.GetNetworkResponse:
        return cpb.GetNetworkResponse(network=self.store.find("network", request.network_id))

    @rpc_method
    async def ListNetworks(self, request: cpb.ListNetworksRequest) -> cpb.ListNetworksResponse:
        return cpb.ListNetworksResponse(networks=[n for n in self.store.list("network") if matches("network", n, request.filters)])

    @rpc_method
    async def RemoveNetwork(self, request: cpb.RemoveNetworkRequest) -> cpb.RemoveNetworkResponse:
        network = self.store.find("network", request.network_id)
        for s in self.store.list("service"):
            if any(a.target == network.id for a in s.spec.task.networks):
                raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                              f"network {network.spec.annotations.name} is in use by service {s.spec.annotations.name}")
        await self.store.delete("network", network.id, version=network.meta.version.index)
        return cpb.RemoveNetworkResponse()

    # -- clusters -----------------------------------------------------------------------------

    @rpc_method
    async def GetCluster(self, request: cpb.GetClusterRequest) -> cpb.GetClusterResponse:
        return cpb.GetClusterResponse(cluster=self.store.find("cluster", request.cluster_id))

    @rpc_method
    async def ListClusters(self, request: cpb.ListClustersRequest) -> cpb.ListClustersResponse:
        return cpb.ListClustersResponse(clusters=[c for c in self.store.list("cluster") if matches("cluster", c, request.filters)])

    @rpc_method
    async def UpdateCluster(self, request: cpb.UpdateClusterRequest) -> cpb.UpdateClusterResponse:
        current = self.store.find("cluster", request.cluster_id)
        check_cluster_spec(request.spec)
        if request.spec.annotations.name != current.spec.annotations.name:
            raise ValidationError("renaming the cluster is not supported")
        _check_version("cluster", current, request.cluster_version)
        cluster = pb.Cluster()
        cluster.CopyFrom(current)
        cluster.spec.CopyFrom(request.spec)
        return cpb.UpdateClusterResponse(cluster=await self._update("cluster", cluster))
