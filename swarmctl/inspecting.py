"""Commands that look at containers: ps, inspect, logs, top, stats."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .errors import CLIError
from .formatting import (bytes_size, container_status, human_duration, json_dump, quoted_command, short_id,
                         table, volume_document)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default: running)")
    p.add_argument("-q", "--quiet", action="store_true", help="only display ids")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("inspect", help="low-level information on containers, images or volumes (JSON)")
    p.add_argument("objects", nargs="+")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("logs", help="fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="follow log output")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("-n", "--tail", default="all", help="number of lines from the end (default all)")
    p.add_argument("container")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("top", help="display the running processes of a container")
    p.add_argument("container")
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("stats", help="live resource usage of containers")
    p.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    p.add_argument("containers", nargs="*")
    p.set_defaults(func=cmd_stats)


def cmd_ps(client, args) -> int:
    infos = client.stub.ListContainers(client.pb.ListContainersRequest(all=args.all)).containers
    infos = sorted(infos, key=lambda c: c.created, reverse=True)
    if args.quiet:
        for c in infos:
            print(c.id if args.no_trunc else short_id(c.id))
        return 0
    now = time.time()
    rows = [[c.id if args.no_trunc else short_id(c.id), c.image, quoted_command(c.command, not args.no_trunc),
             f"{human_duration(now - c.created)} ago",
             container_status(c.status, c.exit_code, c.started_at, c.finished_at, now),
             ", ".join(f"{p.host_ip}:{p.host_port}->{p.container_port}/{p.proto}" for p in c.ports), c.name]
            for c in infos]
    print(table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows))
    return 0


def container_config(client, ref: str) -> dict:
    """The `Config` section of a container's inspect document (Tty, OpenStdin, ...)."""
    doc = json.loads(client.stub.InspectContainer(client.pb.ContainerRef(ref=ref)).json)
    return doc.get("Config") or {}


def cmd_inspect(client, args) -> int:
    """Containers first, then images, then volumes, as `docker inspect` looks them up."""
    pb, found, missing = client.pb, [], []
    for ref in args.objects:
        lookups = (
            lambda: json.loads(client.stub.InspectContainer(pb.ContainerRef(ref=ref)).json),
            lambda: json.loads(client.stub.InspectImage(pb.ImageRef(ref=ref)).json),
            lambda: volume_document(client.stub.InspectVolume(pb.VolumeName(name=ref))),
        )
        for lookup in lookups:
            try:
                found.append(lookup())
                break
            except client.RpcError as err:
                if err.code().name != "NOT_FOUND":
                    raise
        else:
            missing.append(ref)
    print(json_dump(found))
    for ref in missing:
        print(f"Error: No such object: {ref}", file=sys.stderr)
    return 1 if missing else 0


def cmd_logs(client, args) -> int:
    if args.tail == "all":
        tail, tail_set = 0, False
    elif args.tail.isdigit():
        tail, tail_set = int(args.tail), True
    else:
        raise CLIError(f"invalid --tail {args.tail!r}: expected a number or all")
    req = client.pb.LogsRequest(ref=args.container, follow=args.follow, tail=tail, tail_set=tail_set)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for entry in client.stub.Logs(req):
        stream = err if entry.stream == "stderr" else out
        if args.timestamps:
            stream.write(entry.time.encode() + b" ")
        stream.write(entry.data)
        stream.flush()
    return 0


def cmd_top(client, args) -> int:
    resp = client.stub.Top(client.pb.ContainerRef(ref=args.container))
    print(table(list(resp.titles), [list(r.values) for r in resp.processes]))
    return 0


def cmd_stats(client, args) -> int:
    req = client.pb.StatsRequest(refs=args.containers, stream=not args.no_stream)
    headers = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
    for batch in client.stub.Stats(req):
        rows = []
        for s in batch.stats:
            limit = s.memory_limit
            mem_pct = f"{100.0 * s.memory_usage / limit:.2f}%" if limit else "0.00%"
            rows.append([short_id(s.id), s.name, f"{s.cpu_percent:.2f}%",
                         f"{bytes_size(s.memory_usage)} / {bytes_size(limit) if limit else 'unlimited'}",
                         mem_pct, "0B / 0B", "0B / 0B", str(s.pids_current)])
        if req.stream:
            sys.stdout.write("\033[2J\033[H")
        print(table(headers, rows), flush=True)
    return 0
