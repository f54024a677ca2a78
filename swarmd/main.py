"""`swarmd`: the Flotilla daemon. Subcommands start the agent (and, later, the manager)."""
from __future__ import annotations

import argparse
import sys

from . import hollow_cmd, manager_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarmd", description="Flotilla daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    hollow_cmd.add_parser(sub)
    manager_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "func"):
        return args.func(args)
    print(f"swarmd: {args.command} is not built yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
