"""`swarmctl`: the command-line client of the agent's local API (Docker's commands and flags).

Start-up cost matters for a CLI: this module imports only argparse; each command group's
module imports gRPC and the generated messages inside its handlers, and only the group of the
command being run is imported at all (every group for help, errors and unlisted commands).
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys

from .client import Client, host_from
from .errors import CLIError, from_rpc_error

# The command group modules, in the order their commands appear in the help.
GROUPS = ("containers", "attaching", "inspecting", "files", "images", "distribution", "building", "imageinfo",
          "volumes", "network", "cluster")
# Hot commands and the one group that defines each: running one imports nothing else.
COMMAND_GROUP = {
    **dict.fromkeys(("run", "create", "start", "stop", "restart", "kill", "pause", "unpause", "rm", "wait"),
                    "containers"),
    **dict.fromkeys(("exec", "attach"), "attaching"),
    **dict.fromkeys(("ps", "inspect", "logs", "top", "stats"), "inspecting"),
    **dict.fromkeys(("network", "port"), "network"),
}


def command_of(argv: list[str]) -> str | None:
    """The subcommand's name in argv (after the global -H/--host option), None if there is none."""
    args = iter(argv)
    for arg in args:
        if arg in ("-H", "--host"):
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


@functools.cache
def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size() reports it ($COLUMNS, else stdout's)."""
    try:
        return int(os.environ.get("COLUMNS", "")) or 80
    except ValueError:
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized without importing shutil.

    argparse makes a formatter for every add_argument (to check the metavar), and each one asks
    shutil for the terminal size: ~5 ms to import shutil (zlib, bz2, lzma) plus an environment
    lookup per argument, on every swarmctl start, for help that is almost never printed.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _columns() - 2)


# argparse translates each of its messages as it builds a parser (~30 per `run`), and gettext
# looks for catalogs on disk every time (4 stats per message): a third of the parser's build time.
# The answer cannot change within one process, so ask once per message.
argparse._ = functools.cache(argparse._)  # type: ignore[attr-defined]


class Parser(argparse.ArgumentParser):
    """ArgumentParser with `Formatter`; subcommand parsers are made of the same class."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given argv, with only the command group that argv needs."""
    parser = Parser(prog="swarmctl", description="Flotilla command-line client")
    parser.add_argument("-H", "--host", default=None,
                        help="agent socket, unix:///PATH (default $FLOTILLA_HOST or unix:///run/flotilla/agent.sock)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    group = COMMAND_GROUP.get(command_of(argv)) if argv is not None else None
    for name in (group,) if group else GROUPS:
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. As the program itself (argv None) it exits at once when done: gRPC's
    interpreter-shutdown work costs ~30 ms per command (interpreter shutdown a few ms without it),
    and there is nothing left to clean up."""
    code = run_command(argv)
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def run_command(argv: list[str] | None) -> int:
    args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    host = host_from(args.host)
    client = None
    try:
        client = Client(host)
        return args.func(client, args) or 0
    except CLIError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet the flush at exit
        return 141
    except Exception as exc:
        if client is None or not isinstance(exc, client.RpcError):
            raise
        err = from_rpc_error(exc, host, getattr(args, "error_exit", 1))
        print(err, file=sys.stderr)
        return err.exit_code
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
