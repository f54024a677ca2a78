"""`swarmctl`: the command-line client of the agent's local API and the manager's Control API."""
from __future__ import annotations

import argparse
import sys

from . import cluster


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarmctl", description="Flotilla command-line client")
    sub = parser.add_subparsers(dest="command", required=True)
    cluster.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "func"):
        return args.func(None, args)
    print(f"swarmctl: {args.command} is not built yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
