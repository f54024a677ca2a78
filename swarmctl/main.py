"""`swarmctl`: the command-line client of the agent's local API (Docker's commands and flags).

Start-up cost matters for a CLI: this module imports only argparse; each command group's
module imports gRPC and the generated messages inside its handlers.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import attaching, building, containers, distribution, files, imageinfo, images, inspecting, network, volumes
from .client import Client, host_from
from .errors import CLIError, from_rpc_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarmctl", description="Flotilla command-line client")
    parser.add_argument("-H", "--host", default=None,
                        help="agent socket, unix:///PATH (default $FLOTILLA_HOST or unix:///run/flotilla/agent.sock)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (containers, attaching, inspecting, files, images, distribution, building, imageinfo, volumes, network):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. As the program itself (argv None) it exits at once when done: gRPC's
    interpreter-shutdown work costs ~30 ms per command and there is nothing left to clean up."""
    code = run_command(argv)
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def run_command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
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
        import grpc

        if not isinstance(exc, grpc.RpcError):
            raise
        err = from_rpc_error(exc, host, getattr(args, "error_exit", 1))
        print(err, file=sys.stderr)
        return err.exit_code
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
