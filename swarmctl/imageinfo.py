"""Looking at and cleaning up images: `history`, `image inspect`, `image prune [-a]`."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .distribution import image_subparsers
from .formatting import human_duration, human_size, json_dump, short_id, table

CREATED_BY_WIDTH = 45  # Docker truncates the CREATED BY column to this (without --no-trunc)


def register(sub: argparse._SubParsersAction) -> None:
    isub = image_subparsers(sub)
    for parent in (sub, isub):
        p = parent.add_parser("history", help="show the history of an image")
        p.add_argument("-q", "--quiet", action="store_true", help="only show image ids")
        p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
        p.add_argument("image")
        p.set_defaults(func=cmd_history)

    p = isub.add_parser("inspect", help="low-level information on images (JSON)")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_inspect)

    p = isub.add_parser("prune", help="remove unused images")
    p.add_argument("-a", "--all", action="store_true", help="remove all images without containers, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=cmd_prune)


def _created(text: str, now: float) -> str:
    from datetime import datetime

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "N/A"
    return f"{human_duration(now - when)} ago"


def cmd_history(client, args) -> int:
    entries = client.stub.ImageHistory(client.pb.HistoryRequest(ref=args.image)).entries
    shown = lambda ident: ident if args.no_trunc or ident == "<missing>" else short_id(ident)  # noqa: E731
    if args.quiet:
        for e in entries:
            print(shown(e.id))
        return 0
    now, rows = time.time(), []
    for e in entries:
        created_by = " ".join(e.created_by.split()) if not args.no_trunc else e.created_by
        if not args.no_trunc and len(created_by) > CREATED_BY_WIDTH:
            created_by = created_by[:CREATED_BY_WIDTH - 1] + "…"
        rows.append([shown(e.id), _created(e.created, now), created_by, human_size(e.size), e.comment])
    print(table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], rows))
    return 0


def cmd_inspect(client, args) -> int:
    """Every image's document; a missing one is reported (one line) after the others, as Docker does."""
    from .errors import from_rpc_error

    docs, failed = [], False
    for ref in args.images:
        try:
            docs.append(json.loads(client.stub.InspectImage(client.pb.ImageRef(ref=ref)).json))
        except client.RpcError as err:
            if err.code().name != "NOT_FOUND":
                raise
            print(from_rpc_error(err, client.host), file=sys.stderr)
            failed = True
    print(json_dump(docs))
    return 1 if failed else 0


def cmd_prune(client, args) -> int:
    if not args.force:
        what = "all images without at least one container associated to them" if args.all else "all dangling images"
        print(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    report = client.stub.PruneImages(client.pb.PruneImagesRequest(all=args.all))
    if report.deleted:
        print("Deleted Images:")
        for line in report.deleted:  # rmi's "Deleted: x" lines; prune prints them in lower case, as Docker
            print(line[:1].lower() + line[1:])
        print()
    print(f"Total reclaimed space: {human_size(report.space_reclaimed)}")
    return 0
