"""Image commands: import, images, rmi, tag, commit."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .errors import CLIError
from .formatting import human_duration, human_size, short_id, table

CHUNK = 1 << 20


def register(sub: argparse._SubParsersAction) -> None:
    image = sub.add_parser("image", help="manage images")
    isub = image.add_subparsers(dest="image_command", required=True)
    for parent in (sub, isub):  # `swarmctl import` and `swarmctl image import`, as Docker has both
        p = parent.add_parser("import", help="create an image from a root filesystem tarball")
        p.add_argument("-c", "--change", action="append", default=[], help="Dockerfile instruction, e.g. 'CMD [\"sh\"]'")
        p.add_argument("file", help="tarball path, or - for stdin")
        p.add_argument("reference", nargs="?", default="", help="REPOSITORY[:TAG]")
        p.set_defaults(func=cmd_import)
    for parent, name in ((sub, "images"), (isub, "ls")):
        p = parent.add_parser(name, help="list images")
        p.add_argument("-q", "--quiet", action="store_true", help="only show image ids")
        p.set_defaults(func=cmd_images)
    for parent, name in ((sub, "rmi"), (isub, "rm")):
        p = parent.add_parser(name, help="remove images")
        p.add_argument("-f", "--force", action="store_true", help="remove even if tagged several times")
        p.add_argument("images", nargs="+")
        p.set_defaults(func=cmd_rmi)
    for parent in (sub, isub):
        p = parent.add_parser("tag", help="create a tag TARGET that refers to SOURCE")
        p.add_argument("source")
        p.add_argument("target")
        p.set_defaults(func=cmd_tag)
    p = sub.add_parser("commit", help="create a new image from a container's changes")
    p.add_argument("-c", "--change", action="append", default=[], help="Dockerfile instruction")
    p.add_argument("container")
    p.add_argument("reference", nargs="?", default="")
    p.set_defaults(func=cmd_commit)


def _changes_json(lines: list[str]) -> str:
    from .changes import parse_changes

    return json.dumps(parse_changes(lines)) if lines else ""


def cmd_import(client, args) -> int:
    pb = client.pb
    header = pb.ImportHeader(reference=args.reference, changes_json=_changes_json(args.change))
    try:
        source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    except OSError as exc:
        raise CLIError(f"cannot read {args.file}: {exc.strerror}")

    def requests():
        yield pb.ImportImageRequest(header=header)
        with source:
            while data := source.read(CHUNK):
                yield pb.ImportImageRequest(data=data)

    info = client.stub.ImportImage(requests())
    print(info.id)
    return 0


def cmd_images(client, args) -> int:
    images = client.stub.ListImages(client.pb.Empty()).images
    images = sorted(images, key=lambda i: i.created, reverse=True)
    if args.quiet:
        for image in images:
            print(short_id(image.id))
        return 0
    now, rows = time.time(), []
    for image in images:
        for tag in image.repo_tags or ["<none>:<none>"]:
            repo, _, version = tag.rpartition(":")
            if "/" in version or not repo:
                repo, version = tag, "<none>"
            rows.append([repo, version, short_id(image.id), f"{human_duration(now - image.created)} ago",
                         human_size(image.size)])
    print(table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows))
    return 0


def cmd_rmi(client, args) -> int:
    from .errors import from_rpc_error

    failed = False
    for ref in args.images:
        try:
            resp = client.stub.RemoveImage(client.pb.RemoveImageRequest(ref=ref, force=args.force))
        except client.RpcError as err:
            if err.code().name == "UNAVAILABLE":
                raise
            print(from_rpc_error(err, client.host), file=sys.stderr)
            failed = True
            continue
        for line in resp.lines:
            print(line)
    return 1 if failed else 0


def cmd_tag(client, args) -> int:
    client.stub.TagImage(client.pb.TagImageRequest(source=args.source, target=args.target))
    return 0


def cmd_commit(client, args) -> int:
    req = client.pb.CommitRequest(ref=args.container, reference=args.reference,
                                  changes_json=_changes_json(args.change))
    print(client.stub.Commit(req).id)
    return 0
