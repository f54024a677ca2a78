"""`swarmctl service logs [-f] [--tail N] [-t] SERVICE|TASK`: a service's logs from every node.

The manager's log broker gathers the lines from the agents that run the tasks; each line is
printed with Docker's prefix `SERVICE.SLOT.TASKID@NODE    | `, stdout lines to stdout and
stderr lines to stderr. Warnings (a node not connected, so its tasks' logs are missing) go
to stderr. gRPC is imported only when the command runs.
"""
from __future__ import annotations

import argparse
import os
import sys

DEFAULT_MANAGER = "unix:///run/flotilla/control.sock"


def _tail(text: str) -> int:
    if text == "all":
        return -1
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --tail {text!r}: a number of lines or 'all'") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"invalid --tail {text!r}: a number of lines or 'all'")
    return n


def add_parser(service_subparsers) -> None:
    """Register `logs` under swarmctl's `service` command group."""
    p = service_subparsers.add_parser("logs", help="fetch the logs of a service or a task")
    p.add_argument("target", metavar="SERVICE|TASK")
    p.add_argument("-f", "--follow", action="store_true", help="follow the output until the tasks stop")
    p.add_argument("--tail", type=_tail, default=-1, help="lines to show from the end of each task's log (default all)")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("--no-task-ids", action="store_true", help="show the task name without its id")
    p.add_argument("-m", "--manager", default=None,
                   help=f"manager address, unix:///PATH or HOST:PORT (default $FLOTILLA_MANAGER or {DEFAULT_MANAGER})")
    p.set_defaults(func=run)


def manager_address(args: argparse.Namespace) -> str:
    return args.manager or os.environ.get("FLOTILLA_MANAGER") or DEFAULT_MANAGER


def prefix(ctx, no_task_ids: bool) -> str:
    name = ctx.task_name
    if no_task_ids:
        name = name.rsplit(".", 1)[0]
    return f"{name}@{ctx.node_name}"


def format_line(msg, no_task_ids: bool, timestamps: bool, width: int) -> bytes:
    head = prefix(msg.context, no_task_ids).ljust(width)
    if timestamps:
        head = msg.timestamp.ToJsonString() + " " + head
    data = msg.data if msg.data.endswith(b"\n") else msg.data + b"\n"
    return f"{head} | ".encode() + data


def run(_client, args: argparse.Namespace) -> int:
    import grpc

    from flotilla.proto import logbroker_pb2 as lpb
    from flotilla.proto import logbroker_pb2_grpc as lgrpc

    from .errors import CLIError

    address = manager_address(args)
    request = lpb.SubscribeLogsRequest(target=args.target,
                                       options=lpb.LogSubscriptionOptions(follow=args.follow, tail=args.tail))
    width = 0
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        try:
            for reply in lgrpc.LogsStub(channel).SubscribeLogs(request):
                for warning in reply.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
                for msg in reply.messages:
                    width = max(width, len(prefix(msg.context, args.no_task_ids)))
                    out = sys.stderr if msg.stream == lpb.LogMessage.STDERR else sys.stdout
                    out.flush()
                    out.buffer.write(format_line(msg, args.no_task_ids, args.timestamps, width))
                    out.buffer.flush()
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise CLIError(f"cannot reach the manager at {address}: is `swarmd manager` running?") from None
            raise CLIError(exc.details() or code.name) from None
    return 0
