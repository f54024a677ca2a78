"""`swarmctl network ... --scope swarm`: the cluster's networks, on a manager's Control API.

Docker's `docker network create --scope swarm` in spirit: the same `network` commands, sent to
the manager instead of the local agent. A `bridge` cluster network is built on each node that
runs a task on it (node-local scope); see docs/cluster-agent.md, "Networks".
"""
from __future__ import annotations

import sys

from flotilla.proto import control_pb2 as cpb
from flotilla.proto import objects_pb2 as pb

from .connect import ClusterError
from .format import table, to_json
from .values import pair


def create(stub, args) -> int:
    spec = pb.NetworkSpec(driver=args.driver, internal=args.internal)
    spec.annotations.name = args.name
    spec.annotations.labels.update(dict(pair(label, "label") for label in args.label))
    spec.options.update(dict(pair(opt, "option") for opt in args.opt))
    if args.subnet:
        spec.ipam.add(subnet=args.subnet, gateway=args.gateway, range=args.ip_range)
    elif args.gateway or args.ip_range:
        raise ClusterError("--gateway and --ip-range need --subnet")
    print(stub.CreateNetwork(cpb.CreateNetworkRequest(spec=spec)).network.id)
    return 0


def ls(stub, args) -> int:
    networks = sorted(stub.ListNetworks(cpb.ListNetworksRequest()).networks, key=lambda n: n.spec.annotations.name)
    if args.quiet:
        for n in networks:
            print(n.id[:12])
        return 0
    table(["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"],
          [[n.id[:12], n.spec.annotations.name, n.spec.driver, "swarm", ",".join(c.subnet for c in n.ipam)]
           for n in networks])
    return 0


def inspect(stub, args) -> int:
    print(to_json([stub.GetNetwork(cpb.GetNetworkRequest(network_id=ref)).network for ref in args.networks]))
    return 0


def rm(stub, args) -> int:
    import grpc

    failed = False
    for ref in args.networks:
        try:
            network = stub.GetNetwork(cpb.GetNetworkRequest(network_id=ref)).network
            stub.RemoveNetwork(cpb.RemoveNetworkRequest(network_id=network.id))
            print(ref)
        except grpc.RpcError as e:
            print(f"Error response from manager: {e.details()}", file=sys.stderr)
            failed = True
    return 1 if failed else 0
