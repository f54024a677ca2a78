"""Commands that join a running container: exec and attach."""
from __future__ import annotations

import argparse

from .errors import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-d", "--detach", action="store_true", help="run the command in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("-e", "--env", action="append", default=[], help="set environment variables")
    p.add_argument("-u", "--user", default="", help="user name or uid[:gid]")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("attach", help="attach this terminal to a running container")
    p.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    p.add_argument("container")
    p.set_defaults(func=cmd_attach)


def cmd_exec(client, args) -> int:
    from .interactive import session
    from .runflags import parse_env

    if not args.command:
        raise CLIError("exec needs a command: swarmctl exec CONTAINER COMMAND [ARG...]")
    pb = client.pb
    spec = pb.ExecSpec(cmd=args.command, env=parse_env(args.env, []), user=args.user, workdir=args.workdir,
                       tty=args.tty, stdin_open=args.interactive and not args.detach)
    first = pb.StreamInput(exec=pb.ExecStart(ref=args.container, spec=spec, detach=args.detach))
    outcome = session(client, "Exec", first, stdin=spec.stdin_open, tty=args.tty)
    if args.detach:
        return 0
    if outcome.exit_code is None:
        raise CLIError("the exec's exit code is unknown: the agent closed the stream", 126)
    return outcome.exit_code


def cmd_attach(client, args) -> int:
    from .inspecting import container_config
    from .interactive import session

    pb = client.pb
    config = container_config(client, args.container)
    first = pb.StreamInput(attach=pb.AttachStart(ref=args.container))
    stdin = bool(config.get("OpenStdin")) and not args.no_stdin
    from .containers import signal_container

    outcome = session(client, "Attach", first, stdin=stdin, tty=bool(config.get("Tty")),
                      forward_signal=lambda o, sig: signal_container(client, args.container, sig))
    return outcome.exit_code if outcome.exit_code is not None else 0
