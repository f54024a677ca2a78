"""`swarmd manager`: serve the Control and Dispatcher APIs on an etcd cluster; lead when elected."""
from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def parse_duration(text: str) -> float:
    """`200ms`, `0.2s`, `5`, `1m` to seconds."""
    m = _DURATION.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 5s, 200ms or 1m")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]


def add_parser(subparsers) -> None:
    """Register `swarmd manager` on swarmd's subcommand parser."""
    p = subparsers.add_parser("manager", help="run a manager (Control + Dispatcher APIs, reconcilers when leader)")
    p.add_argument("--etcd-endpoints", required=True, help="comma-separated etcd client URLs, e.g. http://127.0.0.1:2379")
    p.add_argument("--listen-control", default="unix:///run/flotilla/control.sock", help="unix socket for swarmctl (Control API)")
    p.add_argument("--listen-remote", default="0.0.0.0:4242", help="HOST:PORT for agents (Dispatcher) and remote Control clients")
    p.add_argument("--metrics-addr", default="", help="HOST:PORT to serve Prometheus metrics on (off when empty)")
    p.add_argument("--heartbeat-period", type=parse_duration, default=None,
                   help="agent heartbeat period (default: the cluster object's, 5s); nodes are DOWN after 3 missed")
    p.add_argument("--leader-ttl", type=parse_duration, default=5.0, help="leader lease TTL in whole seconds (default 5s)")
    p.add_argument("--prefix", default="/flotilla/v1/", help="etcd key prefix of the cluster state")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from flotilla.manager.manager import Manager, ManagerConfig
    from flotilla.manager.store import StoreError

    config = ManagerConfig(etcd_endpoints=[e for e in args.etcd_endpoints.split(",") if e],
                           listen_remote=args.listen_remote, listen_control=args.listen_control,
                           metrics_addr=args.metrics_addr, heartbeat_period=args.heartbeat_period,
                           leader_ttl=args.leader_ttl, prefix=args.prefix)

    async def main() -> None:
        manager = Manager(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await manager.start()
        try:
            await stop.wait()
        finally:
            await manager.stop()

    try:
        asyncio.run(main())
    except (StoreError, OSError, ValueError) as e:
        print(f"swarmd manager: {e}", file=sys.stderr)
        return 1
    return 0
