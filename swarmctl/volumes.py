"""`volume create | ls | inspect | rm`."""
from __future__ import annotations

import argparse
import sys

from .formatting import json_dump, table, volume_document


def register(sub: argparse._SubParsersAction) -> None:
    volume = sub.add_parser("volume", help="manage volumes")
    vsub = volume.add_subparsers(dest="volume_command", required=True)
    p = vsub.add_parser("create", help="create a volume")
    p.add_argument("--label", action="append", default=[], help="KEY=value")
    p.add_argument("name", nargs="?", default="")
    p.set_defaults(func=cmd_create)
    p = vsub.add_parser("ls", help="list volumes")
    p.add_argument("-q", "--quiet", action="store_true", help="only display names")
    p.set_defaults(func=cmd_ls)
    p = vsub.add_parser("inspect", help="display volumes as JSON")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=cmd_inspect)
    p = vsub.add_parser("rm", help="remove volumes")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=cmd_rm)


def cmd_create(client, args) -> int:
    from .runflags import parse_labels

    info = client.stub.CreateVolume(client.pb.CreateVolumeRequest(name=args.name, labels=parse_labels(args.label)))
    print(info.name)
    return 0


def cmd_ls(client, args) -> int:
    volumes = client.stub.ListVolumes(client.pb.Empty()).volumes
    if args.quiet:
        for v in volumes:
            print(v.name)
        return 0
    print(table(["DRIVER", "VOLUME NAME"], [["local", v.name] for v in sorted(volumes, key=lambda v: v.name)]))
    return 0


def cmd_inspect(client, args) -> int:
    docs, failed = [], False
    for name in args.names:
        try:
            info = client.stub.InspectVolume(client.pb.VolumeName(name=name))
        except client.RpcError as err:
            if err.code().name != "NOT_FOUND":
                raise
            print(f"Error: No such volume: {name}", file=sys.stderr)
            failed = True
            continue
        docs.append(volume_document(info))
    print(json_dump(docs))
    return 1 if failed else 0


def cmd_rm(client, args) -> int:
    from .containers import _each

    return _each(client, args.names,
                 lambda name: client.stub.RemoveVolume(client.pb.RemoveVolumeRequest(name=name, force=args.force)))
