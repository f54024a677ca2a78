"""The Control API on a real manager and etcd: CRUD, and validation where every refused request
leaves etcd exactly as it was (a dump of the prefix before and after)."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from flotilla.proto import control_pb2 as cpb
from flotilla.proto import objects_pb2 as pb

from manager_process import etcd_dump, running_manager, wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(120)]
INVALID, EXISTS, ABORTED, NOT_FOUND, PRECONDITION = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS,
                                                     grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND,
                                                     grpc.StatusCode.FAILED_PRECONDITION)


def spec(name: str = "web", replicas: int = 0, image: str = "busybox:latest", **kw) -> pb.ServiceSpec:
    s = pb.ServiceSpec()
    s.annotations.name = name
    s.task.container.image = image
    s.replicated.replicas = replicas
    for c in kw.get("constraints", ()):
        s.task.placement.constraints.append(c)
    return s


def modified(base: pb.ServiceSpec, fn) -> pb.ServiceSpec:
    s = pb.ServiceSpec()
    s.CopyFrom(base)
    fn(s)
    return s


def test_service_crud_and_validation(etcd_endpoint, tmp_path, unique):
    async def main():
        async with running_manager(etcd_endpoint, tmp_path, unique) as (manager, control, _):
            cluster = (await control.ListClusters(cpb.ListClustersRequest())).clusters[0]
            assert cluster.spec.orchestration.task_history_retention_limit == 5
            assert cluster.spec.dispatcher.heartbeat_period.seconds == 5

            svc = (await control.CreateService(cpb.CreateServiceRequest(spec=spec("web")))).service
            assert svc.spec_version.index == 1
            net = (await control.CreateNetwork(cpb.CreateNetworkRequest(spec=pb.NetworkSpec(
                annotations=pb.Annotations(name="backend"), ipam=[pb.IPAMConfig(subnet="10.9.0.0/24", gateway="10.9.0.1")])))).network
            assert net.spec.driver == "bridge" and list(net.ipam) == [pb.IPAMConfig(subnet="10.9.0.0/24", gateway="10.9.0.1")]
            big = spec("big")
            big.task.container.env.append("BLOB=" + "x" * (1 << 20))
            stale = pb.Version(index=svc.meta.version.index - 1)
            bad = [
                ("CreateService", cpb.CreateServiceRequest(spec=spec("neg", image="")), INVALID, "image is required"),
                ("CreateService", cpb.CreateServiceRequest(spec=spec("many", replicas=100_001)), INVALID, "replicas must be between"),
                ("CreateService", cpb.CreateServiceRequest(spec=spec("")), INVALID, "name is required"),
                ("CreateService", cpb.CreateServiceRequest(spec=spec("bad name")), INVALID, "name 'bad name' is invalid"),
                ("CreateService", cpb.CreateServiceRequest(spec=spec("c", constraints=["node.labels.zone~a"])), INVALID, "invalid placement constraint"),
                ("CreateService", cpb.CreateServiceRequest(spec=spec("web")), EXISTS, "already in use"),
                ("CreateService", cpb.CreateServiceRequest(spec=big), INVALID, "the limit is"),
                ("CreateService", cpb.CreateServiceRequest(spec=modified(spec("n"), lambda s: s.task.networks.add(target="nope"))), INVALID, "network 'nope' not found"),
                ("CreateService", cpb.CreateServiceRequest(spec=modified(spec("r"), lambda s: setattr(s.task.resources.reservations, "nano_cpus", -1))), INVALID, "must not be negative"),
                ("CreateService", cpb.CreateServiceRequest(spec=modified(spec("p"), lambda s: s.task.placement.preferences.add(spread_descriptor="zone"))), INVALID, "spread="),
                ("CreateService", cpb.CreateServiceRequest(spec=pb.ServiceSpec(annotations=pb.Annotations(name="m"), task=pb.TaskSpec(container=pb.ContainerSpec(image="x")))), INVALID, "mode is required"),
                ("UpdateService", cpb.UpdateServiceRequest(service_id=svc.id, service_version=stale, spec=spec("web", 2)), ABORTED, "update out of sequence"),
                ("UpdateService", cpb.UpdateServiceRequest(service_id=svc.id, service_version=svc.meta.version, spec=spec("web2")), INVALID, "renaming"),
                ("UpdateService", cpb.UpdateServiceRequest(service_id="nosuch", service_version=svc.meta.version, spec=spec("web")), NOT_FOUND, "no such service"),
                ("UpdateService", cpb.UpdateServiceRequest(service_id=svc.id, service_version=svc.meta.version, spec=spec("web", replicas=-1 & 0xFFFFFFFFFFFFFFFF)), INVALID, "replicas"),
                ("GetService", cpb.GetServiceRequest(service_id="nosuch"), NOT_FOUND, "no such service"),
                ("RemoveService", cpb.RemoveServiceRequest(service_id="nosuch"), NOT_FOUND, "no such service"),
                ("GetNode", cpb.GetNodeRequest(node_id="nosuch"), NOT_FOUND, "no such node"),
                ("RemoveNetwork", cpb.RemoveNetworkRequest(network_id="nosuch"), NOT_FOUND, "no such network"),
                ("CreateNetwork", cpb.CreateNetworkRequest(spec=pb.NetworkSpec(annotations=pb.Annotations(name="backend"))), EXISTS, "already in use"),
                ("CreateNetwork", cpb.CreateNetworkRequest(spec=pb.NetworkSpec(annotations=pb.Annotations(name="n2"), driver="macvlan")), INVALID, "not supported"),
                ("CreateNetwork", cpb.CreateNetworkRequest(spec=pb.NetworkSpec(annotations=pb.Annotations(name="ov"), driver="overlay")), INVALID, "overlay driver is not built yet"),
                ("CreateNetwork", cpb.CreateNetworkRequest(spec=pb.NetworkSpec(annotations=pb.Annotations(name="n5"), ipam=[pb.IPAMConfig(subnet="10.9.0.128/25")])), INVALID, "overlaps 10.9.0.0/24 of network backend"),
                ("CreateNetwork", cpb.CreateNetworkRequest(spec=pb.NetworkSpec(annotations=pb.Annotations(name="n3"), ipam=[pb.IPAMConfig(subnet="10.0.0.0/33")])), INVALID, "subnet"),
                ("CreateNetwork", cpb.CreateNetworkRequest(spec=pb.NetworkSpec(annotations=pb.Annotations(name="n4"), ipam=[pb.IPAMConfig(subnet="10.1.0.0/24", gateway="10.2.0.1")])), INVALID, "outside the subnet"),
                ("UpdateCluster", cpb.UpdateClusterRequest(cluster_id=cluster.id, cluster_version=cluster.meta.version,
                                                           spec=modified_cluster(cluster, -1)), INVALID, "must not be negative"),
            ]
            before = await etcd_dump(etcd_endpoint)
            for method, request, code, fragment in bad:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await getattr(control, method)(request)
                assert err.value.code() == code, (method, fragment, err.value.details())
                assert fragment in err.value.details(), (method, err.value.details())
                assert "\n" not in err.value.details()
            assert await etcd_dump(etcd_endpoint) == before

            # no subnet given: the allocator's first free /24 of 10.0.0.0/8, recorded in the network
            auto = (await control.CreateNetwork(cpb.CreateNetworkRequest(spec=pb.NetworkSpec(
                annotations=pb.Annotations(name="auto"))))).network
            assert list(auto.ipam) == [pb.IPAMConfig(subnet="10.0.0.0/24", gateway="10.0.0.1")]
            assert list(manager.store.get("network", auto.id).ipam) == list(auto.ipam)
            await control.RemoveNetwork(cpb.RemoveNetworkRequest(network_id="auto"))

            # a scale keeps spec_version; an image change bumps it
            scaled = (await control.UpdateService(cpb.UpdateServiceRequest(service_id="web", service_version=svc.meta.version, spec=spec("web", 0)))).service
            assert scaled.spec_version.index == 1
            changed = (await control.UpdateService(cpb.UpdateServiceRequest(
                service_id=svc.id[:8], service_version=scaled.meta.version, spec=spec("web", 0, image="busybox:1")))).service
            assert changed.spec_version.index == 2
            # the network is in use by a service
            await control.UpdateService(cpb.UpdateServiceRequest(service_id=svc.id, service_version=changed.meta.version,
                                                                 spec=modified(changed.spec, lambda s: s.task.networks.add(target="backend"))))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await control.RemoveNetwork(cpb.RemoveNetworkRequest(network_id="backend"))
            assert err.value.code() == PRECONDITION and "in use by service web" in err.value.details()
            # removal: hidden from the list at once, deleted by the orchestrator (no tasks)
            await control.RemoveService(cpb.RemoveServiceRequest(service_id="web"))
            assert not (await control.ListServices(cpb.ListServicesRequest())).services
            await wait_until(lambda: manager.store.get("service", svc.id) is None, "the removed service to be deleted")
            await control.RemoveNetwork(cpb.RemoveNetworkRequest(network_id="backend"))
            assert not (await control.ListNetworks(cpb.ListNetworksRequest())).networks
            # the cluster: heartbeat period change visible to readers
            c2 = modified_cluster(cluster, 3)
            updated = (await control.UpdateCluster(cpb.UpdateClusterRequest(cluster_id=cluster.id, cluster_version=cluster.meta.version, spec=c2))).cluster
            assert updated.spec.orchestration.task_history_retention_limit == 3
    asyncio.run(main())


def modified_cluster(cluster: pb.Cluster, history: int) -> pb.ClusterSpec:
    s = pb.ClusterSpec()
    s.CopyFrom(cluster.spec)
    s.orchestration.task_history_retention_limit = history
    return s


def test_node_update_and_remove(etcd_endpoint, tmp_path, unique):
    async def main():
        from flotilla.proto import dispatcher_pb2 as dpb
        async with running_manager(etcd_endpoint, tmp_path, unique, heartbeat_period=0.2) as (manager, control, dispatcher):
            session = dispatcher.Session(dpb.SessionRequest(description=pb.NodeDescription(hostname=f"host-{unique}")))
            first = await session.read()
            node_id = first.node.id
            node = (await control.GetNode(cpb.GetNodeRequest(node_id=f"host-{unique}"))).node
            assert node.status.state == pb.NodeStatus.READY
            before = await etcd_dump(etcd_endpoint)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await control.RemoveNode(cpb.RemoveNodeRequest(node_id=node_id))
            assert err.value.code() == PRECONDITION and "--force" in err.value.details()
            assert await etcd_dump(etcd_endpoint) == before
            s = pb.NodeSpec()
            s.CopyFrom(node.spec)
            s.availability = pb.NodeSpec.DRAIN
            s.annotations.labels["zone"] = "a"
            updated = (await control.UpdateNode(cpb.UpdateNodeRequest(node_id=node_id, node_version=node.meta.version, spec=s))).node
            assert updated.spec.availability == pb.NodeSpec.DRAIN
            listed = (await control.ListNodes(cpb.ListNodesRequest(filters=cpb.Filters(labels={"zone": "a"})))).nodes
            assert [n.id for n in listed] == [node_id]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await control.UpdateNode(cpb.UpdateNodeRequest(node_id=node_id, node_version=node.meta.version, spec=s))
            assert err.value.code() == ABORTED and "out of sequence" in err.value.details()
            session.cancel()  # no heartbeats: DOWN after 3 periods, then removable
            await wait_until(lambda: manager.store.get("node", node_id).status.state == pb.NodeStatus.DOWN, "node DOWN")
            await control.RemoveNode(cpb.RemoveNodeRequest(node_id=node_id))
            assert not (await control.ListNodes(cpb.ListNodesRequest())).nodes
    asyncio.run(main())
