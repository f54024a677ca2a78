"""`swarmd hollow`: run N simulated agents against a manager (tests and bench/scale.py)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys

from .hollow import HollowCluster, HollowConfig

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kmgt]?)i?b?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """`8G`, `512M`, `1073741824` to bytes (powers of 1024, as Docker's --memory)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use a number with an optional k, m, g or t suffix")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: use key=value")
    return key, value


def add_parser(subparsers) -> None:
    """Register `swarmd hollow` on swarmd's subcommand parser."""
    p = subparsers.add_parser("hollow", help="run simulated agents (for tests and benchmarks)")
    p.add_argument("--manager", required=True, help="the manager's Dispatcher address, host:port")
    p.add_argument("--nodes", type=int, required=True, help="how many hollow nodes to run")
    p.add_argument("--cpus", type=float, default=4.0, help="CPUs each node reports (default 4)")
    p.add_argument("--memory", type=parse_size, default=8 << 30, help="memory each node reports (default 8G)")
    p.add_argument("--label", type=parse_label, action="append", default=[], help="engine label k=v (repeatable)")
    p.add_argument("--name-prefix", default="hollow", help="hostnames are PREFIX-0, PREFIX-1, ...")
    p.add_argument("--tick", type=float, default=0.1, help="seconds between status reports of a node")
    p.add_argument("--step", type=float, default=0.0, help="seconds between two states of a task's walk")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.nodes < 1:
        print("swarmd hollow: --nodes must be at least 1", file=sys.stderr)
        return 2
    config = HollowConfig(
        manager=args.manager, cpus=args.cpus, memory=args.memory, labels=dict(args.label),
        name_prefix=args.name_prefix, tick=args.tick, step=args.step,
    )
    asyncio.run(_serve(config, args.nodes))
    return 0


async def _serve(config: HollowConfig, count: int) -> None:
    cluster = HollowCluster(config, count)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cluster.start()
    try:
        await stop.wait()
    finally:
        await cluster.close()
