"""`swarmd`: the Flotilla daemon. A small dispatcher: each subcommand lives in its own package."""
from __future__ import annotations

import argparse
import sys

from . import agent_cmd, allinone, hollow_cmd, manager_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarmd", description="Flotilla daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    agent = sub.add_parser("agent", help="run the node agent and its local runtime API")
    agent.add_argument("--root", default="/var/lib/flotilla", help="state root (default %(default)s)")
    agent.add_argument("--listen-local", default="unix:///run/flotilla/agent.sock",
                       help="local API socket (default %(default)s)")
    agent.add_argument("--cgroup-parent", default="flotilla", help="parent cgroup of containers (default %(default)s)")
    agent.add_argument("--metrics-addr", default=None, help="serve Prometheus metrics on HOST:PORT")
    agent.add_argument("--default-subnet", default="10.88.0.0/16",
                       help="subnet of the default bridge network (default %(default)s)")
    agent.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                       help="registry reached without TLS verification (repeatable; loopback ones always are)")
    agent_cmd.add_cluster_flags(agent)
    hollow_cmd.add_parser(sub)
    manager_cmd.add_parser(sub)
    allinone.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "agent":
        from flotilla.agent.daemon import run
        return run(args.root, args.listen_local, args.cgroup_parent, args.metrics_addr, agent_cmd.cluster_options(args),
                   args.default_subnet, args.insecure_registry)
    if hasattr(args, "func"):
        return args.func(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
