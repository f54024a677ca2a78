"""`cp` (both ways, `-` for a tar stream as Docker) and `export`.

Docker's copy rules, applied on this side since the agent only moves tar streams:
copying out, an existing destination directory receives the source under its own name, any
other destination path is the new name; copying in, the container path is probed the same
way (a directory receives the source, a missing path becomes its name).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Iterator

from .errors import CLIError

CHUNK = 1 << 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cp", help="copy files between a container and the local filesystem")
    p.add_argument("source", help="CONTAINER:SRC_PATH, a local path, or - (a tar on stdin)")
    p.add_argument("destination", help="CONTAINER:DEST_PATH, a local path, or - (a tar on stdout)")
    p.set_defaults(func=cmd_cp)
    p = sub.add_parser("export", help="export a container's filesystem as a tar archive")
    p.add_argument("-o", "--output", default="", help="write to a file instead of stdout")
    p.add_argument("container")
    p.set_defaults(func=cmd_export)


def split_container_path(arg: str) -> tuple[str, str] | None:
    """`CTR:/path` -> (CTR, /path); local paths (containing / before any colon, or none) -> None."""
    if arg == "-" or arg.startswith(("/", ".")):
        return None
    ctr, sep, path = arg.partition(":")
    return (ctr, path) if sep and ctr else None


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks, so tarfile can stream a gRPC response."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def cmd_cp(client, args) -> int:
    src, dst = split_container_path(args.source), split_container_path(args.destination)
    if (src is None) == (dst is None):
        raise CLIError("copying between containers or between local paths is not supported: "
                       "exactly one side must be CONTAINER:PATH")
    if src is not None:
        return copy_out(client, src[0], src[1], args.destination)
    return copy_in(client, args.source, dst[0], dst[1])


def _chunks(stream) -> Iterator[bytes]:
    for chunk in stream:
        yield chunk.data


def copy_out(client, ctr: str, path: str, dest: str) -> int:
    import tarfile

    stream = client.stub.CopyFrom(client.pb.CopyFromRequest(ref=ctr, path=path))
    if dest == "-":
        out = sys.stdout.buffer
        for data in _chunks(stream):
            out.write(data)
        out.flush()
        return 0
    if os.path.isdir(dest):
        target_dir, rename = dest, None
    else:
        target_dir, rename = os.path.dirname(os.path.abspath(dest)), os.path.basename(dest)
        if not os.path.isdir(target_dir):
            stream.cancel()
            raise CLIError(f"destination directory {target_dir} does not exist")
    with tarfile.open(fileobj=io.BufferedReader(ChunkReader(_chunks(stream)), CHUNK), mode="r|") as tar:
        top = None
        for member in tar:
            first, _, rest = member.name.partition("/")
            top = top or first
            if rename and first == top:
                member.name = rename + ("/" + rest if rest else "")
            tar.extract(member, target_dir, filter="tar")
    return 0


def _probe(client, ctr: str, path: str) -> str:
    """"dir", "file" or "missing": what `path` is inside the container (first tar header of a copy)."""
    import tarfile

    stream = client.stub.CopyFrom(client.pb.CopyFromRequest(ref=ctr, path=path))
    try:
        with tarfile.open(fileobj=io.BufferedReader(ChunkReader(_chunks(stream)), CHUNK), mode="r|") as tar:
            first = tar.next()
            return "dir" if first is not None and first.isdir() else "file"
    except client.RpcError as err:
        if err.code().name == "NOT_FOUND" and "no such container" not in (err.details() or "").lower():
            return "missing"
        raise
    finally:
        stream.cancel()


def copy_in(client, source: str, ctr: str, path: str) -> int:
    import tarfile
    import tempfile

    pb = client.pb
    if source == "-":
        tar_file, target = sys.stdin.buffer, path
    else:
        if not os.path.exists(source):
            raise CLIError(f"could not find the file {source} in the local filesystem")
        kind = _probe(client, ctr, path)
        if kind == "dir":
            target, name = path, os.path.basename(os.path.normpath(source))
        else:
            target, name = os.path.dirname(path.rstrip("/")) or "/", os.path.basename(path.rstrip("/"))
        tar_file = tempfile.TemporaryFile()
        with tarfile.open(fileobj=tar_file, mode="w") as tar:
            tar.add(source, arcname=name)
        tar_file.seek(0)

    def requests():
        yield pb.CopyToRequest(header=pb.CopyToHeader(ref=ctr, path=target))
        with tar_file:
            while data := tar_file.read(CHUNK):
                yield pb.CopyToRequest(data=data)

    client.stub.CopyTo(requests())
    return 0


def cmd_export(client, args) -> int:
    if not args.output and sys.stdout.isatty():
        raise CLIError("cowardly refusing to save to a terminal: use -o or redirect the output")
    stream = client.stub.Export(client.pb.ContainerRef(ref=args.container))
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        for data in _chunks(stream):
            out.write(data)
    except BaseException:
        if args.output:
            out.close()
            os.unlink(args.output)
        raise
    if args.output:
        out.close()
    else:
        out.flush()
    return 0
