"""The flags `run` and `create` share (Docker's names), and the ContainerSpec they make.

Only syntax is checked here (numbers are numbers, `-v` has a destination); values with
meaning — memory strings, restart policies, signals — go to the agent as typed, so the one
line that refuses them comes from the daemon that enforces them.
"""
from __future__ import annotations

import argparse
import os

from .errors import CLIError


def add_container_flags(p: argparse.ArgumentParser) -> None:
    """Docker's run/create flags. `-h` is the hostname, as in Docker, so help is only `--help`."""
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("--name", default="", help="assign a name to the container")
    p.add_argument("-e", "--env", action="append", default=[], help="set environment variables (NAME=value or NAME)")
    p.add_argument("--env-file", action="append", default=[], help="read environment variables from a file")
    p.add_argument("-v", "--volume", action="append", default=[], help="bind mount or volume: SRC:DST[:ro]")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    p.add_argument("-u", "--user", default="", help="user name or uid[:gid]")
    p.add_argument("-h", "--hostname", default="", help="container host name")
    p.add_argument("--entrypoint", default=None, help="overwrite the image's ENTRYPOINT (\"\" clears it)")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument("--restart", default="no", help="no | on-failure[:N] | always | unless-stopped")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--init", action="store_true", help="run an init inside the container that forwards signals and reaps processes")
    p.add_argument("--network", "--net", default="bridge", help="bridge (default) | host | none | a network's name")
    p.add_argument("--ip", default="", help="IPv4 address on a user network")
    p.add_argument("--network-alias", action="append", default=[], help="network-scoped alias for the container")
    p.add_argument("-p", "--publish", action="append", default=[],
                   help="publish a port: [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]")
    p.add_argument("-P", "--publish-all", action="store_true", help="publish every EXPOSEd port on a random port")
    p.add_argument("-m", "--memory", default="", help="memory limit (e.g. 512m)")
    p.add_argument("--cpus", type=float, default=0.0, help="number of CPUs")
    p.add_argument("-c", "--cpu-shares", type=int, default=0, help="CPU shares (relative weight)")
    p.add_argument("--pids-limit", type=int, default=0, help="maximum number of processes (0: unlimited)")
    p.add_argument("-l", "--label", action="append", default=[], help="set metadata: KEY=value")
    p.add_argument("--stop-signal", default="", help="signal to stop the container (default SIGTERM)")
    p.add_argument("--stop-timeout", type=int, default=None, help="seconds to wait before killing it on stop")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("image", help="image reference")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")


def parse_env(items: list[str], files: list[str]) -> list[str]:
    """`--env-file` first, then `-e`; a bare NAME takes the value from this shell, as Docker does."""
    env: list[str] = []
    for path in files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise CLIError(f"cannot read env file {path}: {exc.strerror}", 125) from None
        env.extend(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    env.extend(items)
    out = []
    for item in env:
        if "=" in item:
            out.append(item)
        elif item in os.environ:
            out.append(f"{item}={os.environ[item]}")
    return out


def parse_volume(text: str) -> tuple[str, str, bool]:
    """`SRC:DST[:ro|rw]`; a relative SRC is refused (Docker would read it as a volume name)."""
    parts = text.split(":")
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        src, dst, mode = parts
    elif len(parts) == 2:
        (src, dst), mode = parts, "rw"
    else:
        raise CLIError(f"invalid volume specification {text!r}: expected SRC:DST[:ro]", 125)
    if not src or not dst:
        raise CLIError(f"invalid volume specification {text!r}: expected SRC:DST[:ro]", 125)
    if src.startswith("."):
        src = os.path.abspath(src)
    return src, dst, mode == "ro"


def parse_labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise CLIError(f"invalid label {item!r}: expected KEY=value", 125)
        labels[key] = value
    return labels


def container_spec(pb, args: argparse.Namespace):
    """The ContainerSpec message for a parsed `run`/`create` command line."""
    spec = pb.ContainerSpec(
        image=args.image, name=args.name, env=parse_env(args.env, args.env_file), workdir=args.workdir,
        user=args.user, hostname=args.hostname, tty=args.tty, stdin_open=args.interactive,
        readonly_rootfs=args.read_only, restart_policy=args.restart, auto_remove=args.rm,
        network_mode=args.network, memory=args.memory, cpus=args.cpus, cpu_shares=args.cpu_shares,
        pids_limit=args.pids_limit, labels=parse_labels(args.label), stop_signal=args.stop_signal,
        ip=args.ip, network_aliases=args.network_alias, ports=args.publish, publish_all=args.publish_all, init=args.init,
    )
    if args.command:
        spec.cmd.extend(args.command)
        spec.cmd_set = True
    if args.entrypoint is not None:
        spec.entrypoint_set = True
        if args.entrypoint:
            spec.entrypoint.append(args.entrypoint)
    if args.stop_timeout is not None:
        spec.stop_timeout = args.stop_timeout
        spec.stop_timeout_set = True
    for item in args.volume:
        src, dst, ro = parse_volume(item)
        spec.mounts.add(source=src, destination=dst, readonly=ro)
    return spec
