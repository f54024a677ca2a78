"""`network create | ls | inspect | rm | connect | disconnect` and `port` (Docker's syntax)."""
from __future__ import annotations

import argparse
import sys

from .errors import CLIError
from .formatting import json_dump, table


def _scope_flags(p: argparse.ArgumentParser) -> None:
    """`--scope swarm` sends the command to a manager (the cluster's networks) instead of the agent."""
    p.add_argument("--scope", choices=["local", "swarm"], default="local",
                   help="local: this agent's networks; swarm: the cluster's, on the manager")
    p.add_argument("-m", "--manager", default=None,
                   help="with --scope swarm: manager address (default $FLOTILLA_MANAGER or unix:///run/flotilla/control.sock)")


def _swarm(name: str):
    """The cluster handler `name` of swarmctl/cluster/network.py, as a swarmctl command."""
    from .cluster.connect import run
    from .cluster import network as cluster_network

    return run(getattr(cluster_network, name))


def register(sub: argparse._SubParsersAction) -> None:
    network = sub.add_parser("network", help="manage networks")
    nsub = network.add_subparsers(dest="network_command", required=True)
    p = nsub.add_parser("create", help="create a network")
    _scope_flags(p)
    p.add_argument("-d", "--driver", default="bridge", help="driver (only bridge)")
    p.add_argument("--subnet", default="", help="subnet in CIDR form (default: a free private one)")
    p.add_argument("--gateway", default="", help="gateway address (default: the first of the subnet)")
    p.add_argument("--ip-range", default="", help="allocate dynamic addresses from this sub-range (CIDR)")
    p.add_argument("--internal", action="store_true", help="no outbound access, no published ports")
    p.add_argument("-o", "--opt", action="append", default=[], help="driver option KEY=value")
    p.add_argument("--label", action="append", default=[], help="KEY=value")
    p.add_argument("name")
    p.set_defaults(func=cmd_create)
    p = nsub.add_parser("ls", help="list networks")
    _scope_flags(p)
    p.add_argument("-q", "--quiet", action="store_true", help="only display ids")
    p.set_defaults(func=cmd_ls)
    p = nsub.add_parser("inspect", help="display networks as JSON")
    _scope_flags(p)
    p.add_argument("networks", nargs="+")
    p.set_defaults(func=cmd_inspect)
    p = nsub.add_parser("rm", help="remove networks")
    _scope_flags(p)
    p.add_argument("networks", nargs="+")
    p.set_defaults(func=cmd_rm)
    p = nsub.add_parser("connect", help="connect a container to a network")
    p.add_argument("--ip", default="", help="IPv4 address on the network")
    p.add_argument("--alias", action="append", default=[], help="network-scoped alias for the container")
    p.add_argument("network")
    p.add_argument("container")
    p.set_defaults(func=cmd_connect)
    p = nsub.add_parser("disconnect", help="disconnect a container from a network")
    p.add_argument("network")
    p.add_argument("container")
    p.set_defaults(func=cmd_disconnect)

    p = sub.add_parser("port", help="list a container's published ports")
    p.add_argument("container")
    p.add_argument("private_port", nargs="?", default="", help="PORT[/PROTO]: only this container port")
    p.set_defaults(func=cmd_port)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise CLIError(f"invalid {what} {item!r}: expected KEY=value")
        out[key] = value
    return out


def cmd_create(client, args) -> int:
    if args.scope == "swarm":
        return _swarm("create")(client, args)
    req = client.pb.CreateNetworkRequest(
        name=args.name, driver=args.driver, subnet=args.subnet, gateway=args.gateway, ip_range=args.ip_range,
        internal=args.internal, options=_pairs(args.opt, "option"), labels=_pairs(args.label, "label"))
    print(client.stub.CreateNetwork(req).id)
    return 0


def cmd_ls(client, args) -> int:
    if args.scope == "swarm":
        return _swarm("ls")(client, args)
    networks = client.stub.ListNetworks(client.pb.Empty()).networks
    if args.quiet:
        for n in networks:
            print(n.id[:12])
        return 0
    print(table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], [[n.id[:12], n.name, n.driver, n.scope] for n in networks]))
    return 0


def cmd_inspect(client, args) -> int:
    if args.scope == "swarm":
        return _swarm("inspect")(client, args)
    import json

    docs, failed = [], False
    for ref in args.networks:
        try:
            docs.append(json.loads(client.stub.InspectNetwork(client.pb.NetworkRef(ref=ref)).json))
        except client.RpcError as err:
            if err.code().name != "NOT_FOUND":
                raise
            print(f"Error: No such network: {ref}", file=sys.stderr)
            failed = True
    print(json_dump(docs))
    return 1 if failed else 0


def cmd_rm(client, args) -> int:
    if args.scope == "swarm":
        return _swarm("rm")(client, args)
    from .containers import _each

    return _each(client, args.networks, lambda ref: client.stub.RemoveNetwork(client.pb.NetworkRef(ref=ref)))


def cmd_connect(client, args) -> int:
    client.stub.ConnectNetwork(client.pb.ConnectNetworkRequest(network=args.network, container=args.container,
                                                               ip=args.ip, aliases=args.alias))
    return 0


def cmd_disconnect(client, args) -> int:
    client.stub.DisconnectNetwork(client.pb.DisconnectNetworkRequest(network=args.network, container=args.container))
    return 0


def cmd_port(client, args) -> int:
    """Docker's lines: `80/tcp -> 0.0.0.0:32768`; with PORT only the host addresses."""
    ports = client.stub.Port(client.pb.ContainerRef(ref=args.container)).ports
    want = args.private_port
    if want and "/" not in want:
        want += "/tcp"
    shown = False
    for p in sorted(ports, key=lambda p: (p.container_port, p.proto, p.host_port)):
        key = f"{p.container_port}/{p.proto}"
        if want and key != want:
            continue
        print(f"{p.host_ip}:{p.host_port}" if want else f"{key} -> {p.host_ip}:{p.host_port}")
        shown = True
    if want and not shown:
        raise CLIError(f"Error: No public port '{want}' published for {args.container}")
    return 0
