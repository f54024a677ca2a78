"""The image RPCs of the local API (issue 3): pull, push, login/logout, save/load, build, history, prune.

A mixin of `RuntimeService` (agent/server.py), so these handlers share its plumbing: blocking
calls in threads, long streams on daemon threads with bounded read-ahead, uploads spooled to
`<root>/agent/tmp`, errors mapped by `errors.status_for`. The work itself is
`flotilla.runtime.imaging.service.ImageService` (`Runtime.image_service()`); this module only
turns its progress callbacks into `ImageOperationOutput` messages, streams `docker save` output as
chunks, and unpacks a build context sent as a tar.
"""
from __future__ import annotations

import io
import json
import os
import queue
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from flotilla.proto import runtime_pb2 as pb
from flotilla.runtime import archive
from flotilla.runtime.fsutil import remove_tree
from flotilla.runtime.images import ImageInfo
from flotilla.runtime.imaging.build import BuildOptions
from flotilla.runtime.imaging.progress import Done, ProgressEvent, events
from flotilla.runtime.imaging.service import ImageService

from . import convert

SAVE_CHUNK = 1 << 20          # bytes per SaveImages message
SAVE_AHEAD = 8                # chunks `docker save` may write ahead of the client
BUILD_DIR_PREFIX = "build-"   # <root>/agent/tmp/build-<hex>: an unpacked context (swept at start-up)


def _progress(event: ProgressEvent) -> pb.ImageOperationOutput:
    return pb.ImageOperationOutput(progress=pb.ImageProgress(
        id=event.id, status=event.status, current=event.current, total=event.total))


def _result(images: list[ImageInfo], digest: str = "") -> pb.ImageOperationOutput:
    return pb.ImageOperationOutput(result=pb.ImageOperationResult(
        images=[convert.image_to_proto(i) for i in images], digest=digest))


class _QueueWriter(io.RawIOBase):
    """A file whose writes go to a bounded queue; gives up once the reader has gone away."""

    def __init__(self, q: queue.Queue, cancelled: threading.Event) -> None:
        self.q, self.cancelled = q, cancelled

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        while True:
            if self.cancelled.is_set():
                raise BrokenPipeError("the client stopped reading the archive")
            try:
                self.q.put(("data", data), timeout=0.5)
                return len(data)
            except queue.Full:
                continue


def save_chunks(service: ImageService, refs: list[str]) -> Iterator[bytes]:
    """`docker save` as a stream of 1 MiB chunks; an error is raised after the chunks before it.

    The archive is written by a thread of its own into a bounded queue, so a slow client
    slows the writer and a client that disconnects stops it (its next write fails).
    """
    q: queue.Queue = queue.Queue(maxsize=SAVE_AHEAD)
    cancelled = threading.Event()

    def work() -> None:
        try:
            with io.BufferedWriter(_QueueWriter(q, cancelled), SAVE_CHUNK) as out:
                service.save(refs, out)
            q.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            if not cancelled.is_set():
                q.put(("error", exc))

    thread = threading.Thread(target=work, name="image-save", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "data":
                yield item
            elif kind == "done":
                return
            else:
                raise item
    finally:
        cancelled.set()
        thread.join()


def recover_images(service: ImageService, tmp_dir: Path) -> None:
    """At start-up, before serving: the image store's and the build sandbox's leftovers
    (`ImageService.recover`), and build contexts a crash left in the agent's tmp dir."""
    service.recover()
    if tmp_dir.is_dir():
        for entry in tmp_dir.iterdir():
            if entry.name.startswith(BUILD_DIR_PREFIX):
                remove_tree(entry)


class ImagesApi:
    """Handlers of the image RPCs; `RuntimeService` provides `images` and the plumbing."""

    images: ImageService
    _tmp: Path

    async def _operation(self, context: grpc.aio.ServicerContext, operation: Callable[[Any], Any],
                         result: Callable[[Any], pb.ImageOperationOutput]):
        """Stream the progress of `operation(progress)`, then its `result(...)` message."""
        async for item in self._iterate(context, events, operation):  # type: ignore[attr-defined]
            yield result(item.result) if isinstance(item, Done) else _progress(item)

    async def PullImage(self, request, context):
        op = lambda cb: self.images.pull(request.reference, request.platform, progress=cb)  # noqa: E731
        async for out in self._operation(context, op, lambda info: _result([info], info.digest)):
            yield out

    async def PushImage(self, request, context):
        op = lambda cb: self.images.push(request.reference, progress=cb)  # noqa: E731
        async for out in self._operation(context, op, lambda digest: _result([], digest)):
            yield out

    async def Login(self, request, context):
        status = await self._call(context, self.images.login, request.server, request.username,  # type: ignore[attr-defined]
                                  request.password)
        return pb.StatusLine(status=status)

    async def Logout(self, request, context):
        return pb.StatusLine(status=await self._call(context, self.images.logout, request.server))  # type: ignore[attr-defined]

    async def SaveImages(self, request, context):
        if not request.refs:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "save needs at least one image")
        async for data in self._iterate(context, save_chunks, self.images, list(request.refs)):  # type: ignore[attr-defined]
            yield pb.Chunk(data=data)

    async def _upload(self, request_iterator, context, what: str):
        """The header of a client stream, then its data spooled to a rewound temporary file."""
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("item") != "header":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the first message must carry the {what} options")
        return first.header, await self._spool(requests)  # type: ignore[attr-defined]

    async def LoadImages(self, request_iterator, context):
        header, archive_file = await self._upload(request_iterator, context, "load")
        with archive_file:
            op = lambda cb: self.images.load(archive_file, header.platform, progress=cb)  # noqa: E731
            async for out in self._operation(context, op, lambda infos: _result(infos)):
                yield out

    async def BuildImage(self, request_iterator, context):
        header, context_tar = await self._upload(request_iterator, context, "build")
        options = BuildOptions(tags=list(header.tags), build_args=dict(header.build_args), target=header.target,
                               no_cache=header.no_cache, labels=dict(header.labels))
        with context_tar:
            async for out in self._operation(context, lambda cb: self._build(context_tar, header.dockerfile, options, cb),
                                             lambda info: _result([info], info.digest)):
                yield out

    def _build(self, context_tar, dockerfile: bytes, options: BuildOptions, progress) -> ImageInfo:
        """Unpack the context (safe extractor: no path leaves the dir), build, remove the context."""
        work = self._tmp / f"{BUILD_DIR_PREFIX}{secrets.token_hex(8)}"
        try:
            (work / "context").mkdir(parents=True)
            fd = os.open(work / "context", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                archive.extract(context_tar, fd)
            finally:
                os.close(fd)
            (work / "Dockerfile").write_bytes(dockerfile)
            options.dockerfile = str(work / "Dockerfile")
            return self.images.build(work / "context", options, progress=progress)
        finally:
            remove_tree(work)

    async def InspectImage(self, request, context):
        doc = await self._call(context, self.images.inspect, request.ref)  # type: ignore[attr-defined]
        return pb.JsonDocument(json=json.dumps(doc, default=str))

    async def ImageHistory(self, request, context):
        entries = await self._call(context, self.images.history, request.ref)  # type: ignore[attr-defined]
        return pb.HistoryResponse(entries=[
            pb.HistoryEntry(id=e.id, created=e.created, created_by=e.created_by, size=e.size, comment=e.comment,
                            empty_layer=e.empty_layer) for e in entries])

    async def PruneImages(self, request, context):
        report = await self._call(context, self.images.prune, request.all)  # type: ignore[attr-defined]
        return pb.PruneImagesResponse(deleted=report["deleted"], space_reclaimed=report["space_reclaimed"])
