"""`swarmctl node ...` handlers."""
from __future__ import annotations

from flotilla.proto import control_pb2 as cpb
from flotilla.proto import objects_pb2 as pb

from .format import table, to_json
from .values import pair

AVAILABILITY = {"active": pb.NodeSpec.ACTIVE, "pause": pb.NodeSpec.PAUSE, "drain": pb.NodeSpec.DRAIN}


def ls(stub, args) -> int:
    nodes = sorted(stub.ListNodes(cpb.ListNodesRequest()).nodes, key=lambda n: n.description.hostname)
    if args.format == "json":
        print(to_json(nodes))
        return 0
    rows = [[n.id[:12], n.description.hostname, pb.NodeStatus.State.Name(n.status.state).capitalize(),
             pb.NodeSpec.Availability.Name(n.spec.availability).capitalize(), pb.NodeRole.Name(n.role).lower(),
             n.description.engine_version] for n in nodes]
    table(["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "ROLE", "ENGINE VERSION"], rows)
    return 0


def inspect(stub, args) -> int:
    print(to_json([stub.GetNode(cpb.GetNodeRequest(node_id=ref)).node for ref in args.nodes]))
    return 0


def update(stub, args) -> int:
    node = stub.GetNode(cpb.GetNodeRequest(node_id=args.node)).node
    spec = pb.NodeSpec()
    spec.CopyFrom(node.spec)
    if args.availability:
        spec.availability = AVAILABILITY[args.availability]
    for item in args.label_add:
        key, value = pair(item, "label")
        spec.annotations.labels[key] = value
    for key in args.label_rm:
        spec.annotations.labels.pop(key, None)
    stub.UpdateNode(cpb.UpdateNodeRequest(node_id=node.id, node_version=node.meta.version, spec=spec))
    print(args.node)
    return 0


def rm(stub, args) -> int:
    for ref in args.nodes:
        stub.RemoveNode(cpb.RemoveNodeRequest(node_id=ref, force=args.force))
        print(ref)
    return 0
