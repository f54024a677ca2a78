"""The cluster flags of `swarmd agent`: `--manager`, `--label`, `--hostname`.

Without `--manager` the agent runs standalone (only the local runtime API); with it the agent
also joins the cluster through those managers (flotilla.agent.session).
"""
from __future__ import annotations

import argparse

from flotilla.agent.session import parse_labels, parse_managers


def _managers(text: str) -> list[str]:
    try:
        return parse_managers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label(text: str) -> str:
    try:
        parse_labels([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manager", type=_managers, default=None, metavar="HOST:PORT[,HOST:PORT...]",
                        help="join the cluster through these managers' Dispatcher addresses")
    parser.add_argument("--label", type=_label, action="append", default=[], metavar="KEY=VALUE",
                        help="engine label of this node, for placement constraints (repeatable)")
    parser.add_argument("--hostname", default="", help="the node's name in the cluster (default: the host name)")


def cluster_options(args: argparse.Namespace) -> dict | None:
    """Keyword arguments of ClusterAgent, or None for a standalone agent."""
    if not args.manager:
        if args.label or args.hostname:
            raise SystemExit("swarmd agent: --label and --hostname need --manager")
        return None
    return {"managers": args.manager, "hostname": args.hostname, "labels": parse_labels(args.label)}
