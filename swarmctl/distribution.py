"""Image distribution commands: pull, push, login, logout, save, load (Docker's flags and output).

The agent does the transfers (it owns the image store and the registry credentials, which it
keeps in its own Docker-style config.json); these commands send the request and show the
progress it streams back (progress.py).
"""
from __future__ import annotations

import argparse
import os
import sys

from .errors import CLIError

CHUNK = 1 << 20


def image_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subcommands of `swarmctl image` (made by images.py), so `image pull` etc. exist too."""
    image = sub.choices["image"]
    return next(a for a in image._actions if isinstance(a, argparse._SubParsersAction))


def register(sub: argparse._SubParsersAction) -> None:
    isub = image_subparsers(sub)
    for parent in (sub, isub):
        p = parent.add_parser("pull", help="download an image from a registry")
        p.add_argument("--platform", default="", help="os/arch[/variant] to select from a multi-platform image")
        p.add_argument("-q", "--quiet", action="store_true", help="only print the image reference")
        p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
        p.set_defaults(func=cmd_pull)

        p = parent.add_parser("push", help="upload an image to a registry")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
        p.add_argument("reference", metavar="NAME[:TAG]")
        p.set_defaults(func=cmd_push)

        p = parent.add_parser("save", help="write images to a tar archive (docker save format)")
        p.add_argument("-o", "--output", default="", help="write to this file instead of stdout")
        p.add_argument("images", nargs="+")
        p.set_defaults(func=cmd_save)

        p = parent.add_parser("load", help="load images from a tar archive (docker save or OCI layout)")
        p.add_argument("-i", "--input", default="", help="read from this file instead of stdin")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
        p.add_argument("--platform", default="", help="os/arch[/variant] to load from a multi-platform archive")
        p.set_defaults(func=cmd_load)

    p = sub.add_parser("login", help="log in to a registry (credentials are kept by the agent)")
    p.add_argument("-u", "--username", default="")
    p.add_argument("-p", "--password", default=None)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("server", nargs="?", default="", help="registry host[:port] (default Docker Hub)")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", help="log out from a registry")
    p.add_argument("server", nargs="?", default="")
    p.set_defaults(func=cmd_logout)


def show_operation(responses, out, quiet: bool = False):
    """Print the progress of a streamed image operation; returns its final result message."""
    from .progress import ProgressPrinter

    printer = ProgressPrinter(out, out.isatty())
    result = None
    for msg in responses:
        if msg.WhichOneof("item") == "progress":
            if not quiet:
                printer.show(msg.progress)
        else:
            result = msg.result
    if result is None:
        raise CLIError("the agent ended the operation without a result")
    return result


def pull(client, reference: str, platform: str = "", out=None, quiet: bool = False):
    """Pull and print the progress (the agent sends Docker's `Digest:`/`Status:` lines); returns the result."""
    out = out or sys.stdout
    if not quiet and "@" not in reference and ":" not in reference.rpartition("/")[2]:
        print("Using default tag: latest", file=out)
    return show_operation(client.stub.PullImage(client.pb.PullImageRequest(reference=reference, platform=platform)),
                          out, quiet)


def cmd_pull(client, args) -> int:
    pull(client, args.reference, args.platform, quiet=args.quiet)
    print(args.reference)
    return 0


def ensure_image(client, reference: str, policy: str = "missing") -> None:
    """`run`/`create --pull POLICY`: by default an image that is not here is pulled first, as
    Docker does (progress on stderr); `always` pulls anyway, `never` leaves the error to create."""
    if policy == "never":
        return
    if policy == "missing":
        try:
            client.stub.InspectImage(client.pb.ImageRef(ref=reference))
            return
        except client.RpcError as err:
            if err.code().name != "NOT_FOUND":
                raise
        print(f"Unable to find image '{reference}' locally", file=sys.stderr)
    pull(client, reference, out=sys.stderr)


def cmd_push(client, args) -> int:
    show_operation(client.stub.PushImage(client.pb.PushImageRequest(reference=args.reference)), sys.stdout, args.quiet)
    if args.quiet:  # otherwise the agent's last line says it: "<tag>: digest: sha256:... size: N"
        print(args.reference)
    return 0


def cmd_save(client, args) -> int:
    if not args.output and sys.stdout.isatty():
        raise CLIError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    chunks = client.stub.SaveImages(client.pb.SaveImagesRequest(refs=args.images))
    if not args.output:
        for chunk in chunks:
            sys.stdout.buffer.write(chunk.data)
        sys.stdout.buffer.flush()
        return 0
    import tempfile

    target = os.path.abspath(args.output)
    try:  # a temp file renamed at the end: a failed save never leaves a truncated archive
        fd, tmp = tempfile.mkstemp(prefix=".swarmctl-save-", dir=os.path.dirname(target))
    except OSError as exc:
        raise CLIError(f"cannot write {args.output}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk.data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return 0


def cmd_load(client, args) -> int:
    pb = client.pb
    if not args.input and sys.stdin.isatty():
        raise CLIError("requested load from stdin, but stdin is empty")
    try:
        source = open(args.input, "rb") if args.input else sys.stdin.buffer
    except OSError as exc:
        raise CLIError(f"cannot read {args.input}: {exc.strerror}") from None

    def requests():
        yield pb.LoadImagesRequest(header=pb.LoadHeader(platform=args.platform))
        with source:
            while data := source.read(CHUNK):
                yield pb.LoadImagesRequest(data=data)

    result = show_operation(client.stub.LoadImages(requests()), sys.stdout, args.quiet)
    if args.quiet:  # otherwise the agent's progress already said "Loaded image: ..."
        for image in result.images:
            for tag in image.repo_tags or [image.id]:
                print(f"Loaded image{'' if image.repo_tags else ' ID'}: {tag}")
    return 0


def cmd_login(client, args) -> int:
    import getpass

    username, password = args.username, args.password
    if args.password_stdin:
        if password is not None:
            raise CLIError("--password and --password-stdin are mutually exclusive")
        if not username:
            raise CLIError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if not username or password is None:
        if not sys.stdin.isatty():
            raise CLIError("Error: Cannot perform an interactive login from a non TTY device")
        username = username or input("Username: ").strip()
        password = password if password is not None else getpass.getpass("Password: ")
    if not username or not password:
        raise CLIError("Error: username and password are required")
    reply = client.stub.Login(client.pb.LoginRequest(server=args.server, username=username, password=password))
    print(reply.status)
    return 0


def cmd_logout(client, args) -> int:
    print(client.stub.Logout(client.pb.LogoutRequest(server=args.server)).status)
    return 0
