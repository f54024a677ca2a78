"""`swarmctl build`: send a build context to the agent as a tar stream and show the build.

As `docker build` does, the client reads `.dockerignore` and leaves ignored files out of the
tar (a big ignored `node_modules` never crosses the socket). The rules are the builder's own
(`flotilla.runtime.imaging.buildcontext`, pure Python, no kernel access), so the client and the
agent can never disagree about what is in the context. The Dockerfile travels separately, so
`-f` may name a file outside the context, and an ignored Dockerfile still builds.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .distribution import image_subparsers, show_operation
from .errors import CLIError

CHUNK = 1 << 20
SPOOL = 32 << 20  # contexts up to this size are built in memory, larger ones in a temp file


def register(sub: argparse._SubParsersAction) -> None:
    for parent in (sub, image_subparsers(sub)):
        p = parent.add_parser("build", help="build an image from a Dockerfile")
        p.add_argument("-t", "--tag", action="append", default=[], help="name:tag (repeatable)")
        p.add_argument("-f", "--file", default="", help="Dockerfile (default CONTEXT/Dockerfile)")
        p.add_argument("--build-arg", action="append", default=[], metavar="K=V", help="build-time variable")
        p.add_argument("--label", action="append", default=[], metavar="K=V", help="label of the image")
        p.add_argument("--no-cache", action="store_true", help="do not use the layer cache")
        p.add_argument("--target", default="", help="build this stage and stop")
        p.add_argument("-q", "--quiet", action="store_true", help="only print the image id")
        p.add_argument("context", help="context directory")
        p.set_defaults(func=cmd_build)


def key_values(items: list[str], flag: str) -> dict[str, str]:
    """`K=V` flags; `--build-arg K` alone takes K from the environment, as Docker does."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise CLIError(f"invalid {flag} {item!r}: expected KEY=VALUE")
        if not eq:
            if flag != "--build-arg":
                raise CLIError(f"invalid {flag} {item!r}: expected KEY=VALUE")
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def context_tar(context: str):
    """The context's files minus `.dockerignore`d ones, as a tar in a rewound SpooledTemporaryFile;
    links are not followed. (Imports here: swarmctl's start-up pays only for argparse.)"""
    import tarfile
    import tempfile

    from flotilla.runtime.errors import InvalidArgument
    from flotilla.runtime.imaging.buildcontext import BuildContext

    try:
        files = BuildContext(Path(context)).files()
    except InvalidArgument as exc:
        raise CLIError(str(exc)) from None
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL)
    with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            try:
                tar.add(os.path.join(context, rel), arcname=rel, recursive=False)
            except OSError as exc:
                raise CLIError(f"cannot read {os.path.join(context, rel)}: {exc.strerror}") from None
    spool.seek(0)
    return spool


def cmd_build(client, args) -> int:
    pb = client.pb
    if not os.path.isdir(args.context):
        raise CLIError(f"unable to prepare context: path {args.context!r} not found")
    dockerfile = args.file or os.path.join(args.context, "Dockerfile")
    try:
        with open(dockerfile, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise CLIError(f"cannot read Dockerfile {dockerfile}: {exc.strerror}") from None
    header = pb.BuildHeader(tags=args.tag, dockerfile=text, build_args=key_values(args.build_arg, "--build-arg"),
                            labels=key_values(args.label, "--label"), target=args.target, no_cache=args.no_cache)
    tar = context_tar(args.context)

    def requests():
        yield pb.BuildImageRequest(header=header)
        with tar:
            while data := tar.read(CHUNK):
                yield pb.BuildImageRequest(data=data)

    result = show_operation(client.stub.BuildImage(requests()), sys.stdout, args.quiet)
    if args.quiet and result.images:
        print(result.images[0].id)
    return 0
