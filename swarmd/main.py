"""`swarmd`: the Flotilla daemon. Subcommands start the agent (and, later, the manager)."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarmd", description="Flotilla daemon")
    parser.add_subparsers(dest="command", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"swarmd: {args.command} is not built yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
