"""The agent's local gRPC API (`flotilla.runtime.v1.Runtime`): one handler per swarmctl command.

Every runtime call is blocking and goes through a thread; errors become gRPC statuses with the
runtime's one-line message (`errors.status_for`). Streams that may block for as long as a
container lives (log following, copies) each get a daemon thread of their own, so they can
neither starve the short calls nor hold up the agent's exit. Waiting for an exit needs no
thread at all: it awaits the shim's pidfd.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from flotilla.proto import runtime_pb2 as pb
from flotilla.proto import runtime_pb2_grpc as pb_grpc
from flotilla.runtime import errors
from flotilla.runtime.imaging.service import ImageService
from flotilla.runtime.runtime import Runtime

from . import convert, streams
from .errors import status_for
from .images_api import ImagesApi
from .monitor import Monitor
from .networks import NetworkHandlers

log = logging.getLogger("flotilla.agent.server")
T = TypeVar("T")
SPOOL_LIMIT = 32 << 20  # uploads larger than this spill from memory to <root>/agent/tmp
STREAM_AHEAD = 16       # items a streaming iterator may produce ahead of its client
_DONE = object()


class RuntimeService(NetworkHandlers, ImagesApi, pb_grpc.RuntimeServicer):
    def __init__(self, runtime: Runtime, monitor: Monitor, tmp_dir: Path, images: ImageService) -> None:
        self.rt = runtime
        self.images = images  # pull/push/build/... (images_api.py)
        self.monitor = monitor
        self._tmp = tmp_dir
        self._tmp.mkdir(parents=True, exist_ok=True)

    # -- plumbing --------------------------------------------------------------------
    async def _abort(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        code, message, trailers = status_for(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("internal error", exc_info=exc)
        await context.abort(code, message, trailers)

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking runtime call in a thread; its failure aborts the RPC with its status."""
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:  # every failure reaches the client as one status line
            await self._abort(context, exc)
            raise  # not reached: abort raises

    async def _iterate(self, context: grpc.aio.ServicerContext, fn: Callable[..., Iterator[T]], *args: Any) -> AsyncIterator[T]:
        """Consume a blocking iterator (log follow, tar stream) on a daemon thread of its own.

        Such an iterator may block for as long as a container lives; a daemon thread can never
        hold up the agent's exit nor starve the pool of short calls. At most STREAM_AHEAD items
        wait in memory, so a slow client slows the producer instead of filling the agent.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        slots = threading.Semaphore(STREAM_AHEAD)
        stop = threading.Event()

        def produce() -> None:
            last: tuple[Any, BaseException | None] = (_DONE, None)
            iterator = None
            try:
                iterator = iter(fn(*args))
                for item in iterator:
                    while not slots.acquire(timeout=0.5):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(items.put_nowait, (item, None))
            except BaseException as exc:  # delivered to the client as its status
                last = (_DONE, exc)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        close()
            with contextlib.suppress(RuntimeError):  # the loop is gone: the agent is exiting
                loop.call_soon_threadsafe(items.put_nowait, last)

        threading.Thread(target=produce, name="stream", daemon=True).start()
        try:
            while True:
                item, exc = await items.get()
                if item is _DONE:
                    if exc is not None:
                        await self._abort(context, exc)
                    return
                slots.release()
                yield item
        finally:
            stop.set()

    async def _parse(self, context: grpc.aio.ServicerContext, fn: Callable[..., T], *args: Any) -> T:
        """Validate input in the event loop (pure, fast); a bad value aborts with its message."""
        try:
            return fn(*args)
        except Exception as exc:
            await self._abort(context, exc)
            raise

    async def _id(self, context: grpc.aio.ServicerContext, ref: str) -> str:
        return await self._call(context, self.rt.resolve, ref)

    def _start_blocking(self, ref: str, attach: bool, only_if_stopped: bool) -> tuple[str, bool, Any, int | None]:
        """One thread hop for a start: (id, started, start()'s result, the shim's pidfd for the monitor).

        `only_if_stopped`: look the container up first and leave a running one alone
        (StartContainer); the lookup, the start and the pidfd share the hop.
        """
        cid = ref
        if only_if_stopped:
            cid, status = self.rt.status(ref)
            if status in ("running", "paused"):
                return cid, False, None, None
        self.monitor.manual.clear(cid)
        result = self.rt.start(cid, attach)
        try:
            pidfd = self.rt.shim_pidfd(cid)
        except BaseException:
            if isinstance(result, socket.socket):
                result.close()
            raise
        return cid, True, result, pidfd

    async def _start(self, context: grpc.aio.ServicerContext, ref: str, attach: bool = False,
                     only_if_stopped: bool = False):
        """Start a container and watch it; a `--rm` container that cannot start is removed."""
        cid = ref
        try:
            cid, started, result, pidfd = await asyncio.to_thread(self._start_blocking, ref, attach, only_if_stopped)
        except errors.StartFailed as exc:
            info = await asyncio.to_thread(self.rt.get, cid)
            if info.spec.auto_remove:
                with contextlib.suppress(errors.RuntimeFault):
                    await asyncio.to_thread(self.rt.remove, cid, True, False)
            await self._abort(context, exc)
            raise
        except Exception as exc:
            await self._abort(context, exc)
            raise
        if started:  # else it was running already, and the monitor watches it
            self.monitor.follow(cid, pidfd)
        return result

    def _pidfd_or_exit_code(self, ref: str) -> tuple[int | None, int]:
        """(the shim's pidfd, 0) while the container runs, else (None, its exit code): one hop."""
        pidfd = self.rt.shim_pidfd(ref)
        return (pidfd, 0) if pidfd is not None else (None, self.rt.wait(ref, 5.0))

    async def _wait_exit(self, context: grpc.aio.ServicerContext, ref: str) -> int:
        """The exit code once the container has stopped, awaiting the shim's pidfd (no thread)."""
        while True:
            pidfd, code = await self._call(context, self._pidfd_or_exit_code, ref)
            if pidfd is None:
                return code
            loop = asyncio.get_running_loop()
            exited = loop.create_future()
            loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)

    async def _spool(self, requests: AsyncIterator[Any]) -> tempfile.SpooledTemporaryFile:
        """Collect an upload's data messages in a spooled temporary file, rewound."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT, dir=self._tmp)
        async for msg in requests:
            if msg.WhichOneof("item") == "data" and msg.data:
                await asyncio.to_thread(spool.write, msg.data)  # may be on disk once rolled over
        spool.seek(0)
        return spool

    # -- containers ------------------------------------------------------------------
    async def CreateContainer(self, request, context):
        spec = await self._parse(context, convert.spec_from_proto, request)
        info = await self._call(context, self.rt.create, spec)
        return convert.container_to_proto(info)

    async def StartContainer(self, request, context):
        await self._start(context, request.ref, only_if_stopped=True)
        return pb.Empty()

    async def StopContainer(self, request, context):
        cid = await self._id(context, request.ref)
        await asyncio.to_thread(self.monitor.manual.mark, cid)
        async with self.monitor.user_operation(cid):
            await self._call(context, self.rt.stop, cid, request.timeout if request.timeout_set else None)
        return pb.Empty()

    async def RestartContainer(self, request, context):
        cid = await self._id(context, request.ref)
        self.monitor.manual.clear(cid)
        async with self.monitor.user_operation(cid):
            await self._call(context, self.rt.restart, cid, request.timeout if request.timeout_set else None)
        return pb.Empty()

    async def KillContainer(self, request, context):
        cid = await self._id(context, request.ref)
        await asyncio.to_thread(self.monitor.manual.mark, cid)
        async with self.monitor.user_operation(cid):
            await self._call(context, self.rt.kill, cid, request.signal or "KILL")
        return pb.Empty()

    async def PauseContainer(self, request, context):
        await self._call(context, self.rt.pause, request.ref)
        return pb.Empty()

    async def UnpauseContainer(self, request, context):
        await self._call(context, self.rt.unpause, request.ref)
        return pb.Empty()

    def _remove_blocking(self, cid: str, force: bool, volumes: bool) -> None:
        self.rt.remove(cid, force, volumes)
        self.monitor.manual.clear(cid)

    async def RemoveContainer(self, request, context):
        cid = await self._id(context, request.ref)
        async with self.monitor.user_operation(cid, removes=True):
            await self._call(context, self._remove_blocking, cid, request.force, request.volumes)
        return pb.Empty()

    async def ListContainers(self, request, context):
        infos = await self._call(context, self.rt.list, request.all)
        out = pb.ListContainersResponse(containers=[convert.container_to_proto(i) for i in infos])
        for c in out.containers:
            if c.id in self.monitor.restarting and c.status == "exited":
                c.status = "restarting"
        return out

    async def InspectContainer(self, request, context):
        doc = await self._call(context, self.rt.inspect, request.ref)
        state = doc.get("State")
        if doc.get("Id") in self.monitor.restarting and isinstance(state, dict) and state.get("Status") == "exited":
            state.update(Status="restarting", Restarting=True)
        return pb.JsonDocument(json=json.dumps(doc, default=str))

    async def WaitContainer(self, request, context):
        return pb.WaitResponse(exit_code=await self._wait_exit(context, request.ref))

    async def Top(self, request, context):
        rows = await self._call(context, self.rt.top, request.ref)
        titles = list(rows[0].keys()) if rows else ["PID", "USER", "TIME", "CMD"]
        return pb.TopResponse(titles=titles,
                              processes=[pb.TopRow(values=[str(r.get(t, "")) for t in titles]) for r in rows])

    async def Stats(self, request, context):
        previous: dict[str, tuple[float, int]] = {}
        while True:
            refs = list(request.refs) or [c.id for c in await self._call(context, self.rt.list, False)]
            batch = []
            for ref in refs:
                try:
                    info = await asyncio.to_thread(self.rt.get, ref)
                    raw = await asyncio.to_thread(self.rt.stats, info.id)
                except errors.NotFound as exc:
                    if request.refs:
                        await self._abort(context, exc)
                    continue
                except Exception as exc:
                    await self._abort(context, exc)
                    raise
                batch.append((info, raw, time.monotonic()))
            if not previous and batch:  # a CPU percentage needs two samples
                previous = {info.id: (now, _cpu_ns(raw)) for info, raw, now in batch}
                await asyncio.sleep(0.5)
                continue
            out = pb.StatsBatch()
            for info, raw, now in batch:
                then, cpu_then = previous.get(info.id, (now, _cpu_ns(raw)))
                elapsed = (now - then) * 1e9
                out.stats.append(pb.ContainerStats(
                    id=info.id, name=info.name,
                    cpu_percent=100.0 * (_cpu_ns(raw) - cpu_then) / elapsed if elapsed > 0 else 0.0,
                    memory_usage=int(raw.get("memory_usage", 0)),
                    memory_limit=int(raw.get("memory_limit", 0)),
                    pids_current=int(raw.get("pids_current", 0)),
                    pids_limit=int(raw.get("pids_limit", 0)),
                    cpu_usage_ns=_cpu_ns(raw)))
                previous[info.id] = (now, _cpu_ns(raw))
            yield out
            if not request.stream:
                return
            await asyncio.sleep(1.0)

    async def Logs(self, request, context):
        tail = request.tail if request.tail_set else None
        async for entry in self._iterate(context, self.rt.logs, request.ref, request.follow, tail, request.since):
            yield pb.LogEntry(stream=entry.stream, time=str(entry.time), data=entry.data)

    # -- interactive streams ---------------------------------------------------------
    async def _finish(self, context, sock, requests, ref: str | None) -> AsyncIterator[pb.StreamOutput]:
        """Pump a shim socket; if it closed without an exit frame, ask the runtime for the code."""
        got_exit = False
        async for out in streams.pump(sock, requests):
            got_exit = out.WhichOneof("item") == "exit_code"
            yield out
        if not got_exit and ref is not None:
            with contextlib.suppress(errors.RuntimeFault):
                yield pb.StreamOutput(exit_code=await asyncio.to_thread(self.rt.wait, ref, 5.0))

    async def Attach(self, request_iterator, context):
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("item") != "attach":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must say what to attach to")
        cid = await self._id(context, first.attach.ref)
        info = await self._call(context, self.rt.get, cid)
        if first.attach.start and info.status not in ("running", "paused"):
            sock = await self._start(context, cid, attach=True)
        else:
            sock = await self._call(context, self.rt.attach, cid)
        async for out in self._finish(context, sock, requests, cid):
            yield out

    async def Run(self, request_iterator, context):
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("item") != "run":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must carry the container spec")
        spec = await self._parse(context, convert.spec_from_proto, first.run.spec)
        info = await self._call(context, self.rt.create, spec)
        yield pb.StreamOutput(container_id=info.id)
        sock = await self._start(context, info.id, attach=True)
        async for out in self._finish(context, sock, requests, info.id):
            yield out

    async def Exec(self, request_iterator, context):
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("item") != "exec":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must carry the exec spec")
        spec = convert.exec_spec_from_proto(first.exec.spec)
        exec_id, sock = await self._call(context, self.rt.exec, first.exec.ref, spec)
        yield pb.StreamOutput(exec_id=exec_id)
        if first.exec.detach:
            sock.close()
            return
        async for out in self._finish(context, sock, requests, None):
            yield out

    # -- files -----------------------------------------------------------------------
    async def CopyFrom(self, request, context):
        async for data in self._iterate(context, self.rt.copy_from, request.ref, request.path):
            yield pb.Chunk(data=data)

    async def CopyTo(self, request_iterator, context):
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("item") != "header":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must name the container and path")
        with await self._spool(requests) as tar:
            await self._call(context, self.rt.copy_to, first.header.ref, first.header.path, tar)
        return pb.Empty()

    async def Export(self, request, context):
        async for data in self._iterate(context, self.rt.export, request.ref):
            yield pb.Chunk(data=data)

    async def Commit(self, request, context):
        changes = await self._parse(context, convert.changes_from_json, request.changes_json)
        info = await self._call(context, self.rt.commit, request.ref, request.reference, changes)
        return convert.image_to_proto(info)

    # -- images ----------------------------------------------------------------------
    async def ImportImage(self, request_iterator, context):
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("item") != "header":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must carry the image reference")
        changes = await self._parse(context, convert.changes_from_json, first.header.changes_json)
        with await self._spool(requests) as tar:
            info = await self._call(context, self.rt.import_image, tar, first.header.reference, changes)
        return convert.image_to_proto(info)

    async def ListImages(self, request, context):
        infos = await self._call(context, self.rt.images)
        return pb.ListImagesResponse(images=[convert.image_to_proto(i) for i in infos])

    async def RemoveImage(self, request, context):
        lines = await self._call(context, self.rt.remove_image, request.ref, request.force)
        return pb.RemoveImageResponse(lines=lines)

    async def TagImage(self, request, context):
        await self._call(context, self.rt.tag_image, request.source, request.target)
        return pb.Empty()

    # -- volumes ---------------------------------------------------------------------
    async def CreateVolume(self, request, context):
        info = await self._call(context, self.rt.create_volume, request.name, dict(request.labels))
        return convert.volume_to_proto(info)

    async def ListVolumes(self, request, context):
        infos = await self._call(context, self.rt.volumes)
        return pb.ListVolumesResponse(volumes=[convert.volume_to_proto(v) for v in infos])

    async def InspectVolume(self, request, context):
        return convert.volume_to_proto(await self._call(context, self.rt.volume, request.name))

    async def RemoveVolume(self, request, context):
        await self._call(context, self.rt.remove_volume, request.name, request.force)
        return pb.Empty()


def _cpu_ns(raw: dict) -> int:
    """Total CPU time of the container's cgroup (runtime.stats' `cpu_usage_ns`)."""
    return int(raw.get("cpu_usage_ns", 0))
