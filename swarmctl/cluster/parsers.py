"""The argument parsers of the cluster commands (handlers are imported only when run)."""
from __future__ import annotations

import argparse
import importlib


def _lazy(module: str, name: str):
    def command(client, args) -> int:
        from .connect import run

        handler = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        return run(handler)(client, args)
    return command


def _manager_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--manager", default=None,
                   help="manager address, unix:///PATH or HOST:PORT (default $FLOTILLA_MANAGER or unix:///run/flotilla/control.sock)")


def _format_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["table", "json"], default="table", help="table for people, json for programs")


def _resource_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reserve-cpu", default=None, help="CPUs reserved per task, e.g. 0.5")
    p.add_argument("--reserve-memory", default=None, help="memory reserved per task, e.g. 64M")
    p.add_argument("--limit-cpu", default=None, help="CPU limit per task")
    p.add_argument("--limit-memory", default=None, help="memory limit per task, e.g. 256M")


def _cmd(group, name: str, module: str, handler: str, help: str) -> argparse.ArgumentParser:
    p = group.add_parser(name, help=help)
    _manager_flag(p)
    p.set_defaults(func=_lazy(module, handler))
    return p


def register(sub) -> None:
    """Add `service`, `task` and `node` to swarmctl's subcommands."""
    service = sub.add_parser("service", help="manage services of the cluster").add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    p = _cmd(service, "create", "service", "create", "create a service")
    p.add_argument("--name", required=True, help="service name")
    p.add_argument("--mode", choices=["replicated", "global"], default="replicated")
    p.add_argument("--replicas", type=int, default=None, help="number of tasks (replicated mode; default 1)")
    p.add_argument("-e", "--env", action="append", default=[], help="environment variable NAME=value (repeatable)")
    p.add_argument("--constraint", action="append", default=[], help="placement constraint, e.g. node.labels.zone==a")
    p.add_argument("--placement-pref", action="append", default=[], help="placement preference, spread=node.labels.X")
    p.add_argument("--restart-condition", choices=["any", "on-failure", "none"], default="any")
    p.add_argument("--restart-delay", default=None, help="delay between restarts, e.g. 5s")
    p.add_argument("--restart-max-attempts", type=int, default=0, help="give up after this many restarts (0: never)")
    p.add_argument("--label", action="append", default=[], help="service label k=v (repeatable)")
    p.add_argument("--stop-grace-period", default=None, help="time to wait after the stop signal before SIGKILL, e.g. 2s (default 10s)")
    p.add_argument("--init", action="store_true", help="run an init inside each task's container that forwards signals and reaps processes")
    p.add_argument("--network", action="append", default=[],
                   help="attach to a cluster network: NAME or name=NAME,alias=ALIAS (repeatable)")
    p.add_argument("-p", "--publish", action="append", default=[],
                   help="publish a port on each task's node: published=8080,target=80,mode=host[,protocol=udp]")
    _resource_flags(p)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("args", metavar="CMD", nargs=argparse.REMAINDER, help="command and arguments")
    p = _cmd(service, "ls", "service", "ls", "list services")
    _format_flag(p)
    p = _cmd(service, "inspect", "service", "inspect", "show services as JSON")
    p.add_argument("services", nargs="+", metavar="SERVICE")
    p = _cmd(service, "ps", "service", "ps", "list the tasks of services")
    _format_flag(p)
    p.add_argument("services", nargs="+", metavar="SERVICE")
    p = _cmd(service, "scale", "service", "scale", "set replica counts: NAME=REPLICAS ...")
    p.add_argument("scales", nargs="+", metavar="SERVICE=REPLICAS")
    p = _cmd(service, "update", "service", "update", "change a service (its tasks are replaced when what runs changes)")
    p.add_argument("--image", default=None)
    p.add_argument("--env-add", action="append", default=[], help="add or change NAME=value")
    p.add_argument("--env-rm", action="append", default=[], help="remove NAME")
    p.add_argument("--args", default=None, help="new command arguments, one shell-quoted string")
    p.add_argument("--replicas", type=int, default=None)
    p.add_argument("--network-add", action="append", default=[], help="attach to a cluster network: NAME or name=NAME,alias=A")
    p.add_argument("--network-rm", action="append", default=[], help="detach from a cluster network (name or id)")
    p.add_argument("--init", action=argparse.BooleanOptionalAction, default=None,
                   help="run an init inside the tasks' containers (--no-init: not)")
    _resource_flags(p)
    p.add_argument("service", metavar="SERVICE")
    p = _cmd(service, "rm", "service", "rm", "remove services")
    p.add_argument("services", nargs="+", metavar="SERVICE")
    from .. import service_logs  # `service logs` (the log broker, cluster-agent's)
    service_logs.add_parser(service)

    task = sub.add_parser("task", help="inspect tasks of the cluster").add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    p = _cmd(task, "ls", "task", "ls", "list tasks")
    p.add_argument("--service", default=None, help="only this service's tasks")
    p.add_argument("--node", default=None, help="only this node's tasks")
    _format_flag(p)
    p = _cmd(task, "inspect", "task", "inspect", "show tasks as JSON")
    p.add_argument("tasks", nargs="+", metavar="TASK")

    node = sub.add_parser("node", help="manage nodes of the cluster").add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    p = _cmd(node, "ls", "node", "ls", "list nodes")
    _format_flag(p)
    p = _cmd(node, "inspect", "node", "inspect", "show nodes as JSON")
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p = _cmd(node, "update", "node", "update", "change a node's availability or labels")
    p.add_argument("--availability", choices=["active", "pause", "drain"], default=None)
    p.add_argument("--label-add", action="append", default=[], help="add or change label k=v")
    p.add_argument("--label-rm", action="append", default=[], help="remove label k")
    p.add_argument("node", metavar="NODE")
    p = _cmd(node, "rm", "node", "rm", "remove nodes (DOWN ones; others with --force)")
    p.add_argument("--force", action="store_true")
    p.add_argument("nodes", nargs="+", metavar="NODE")
