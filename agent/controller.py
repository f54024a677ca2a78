"""The per-task controller: one coroutine that owns one task's container.

It walks the task through SwarmKit's states — Prepare (image present or pulled, container created:
ACCEPTED, PREPARING, READY), Start (STARTING, RUNNING), Wait (COMPLETE or FAILED with the exit
code), Shutdown (stop signal, grace period, SIGKILL: SHUTDOWN) and Remove — and reports every
state it reaches. A failure before STARTING is REJECTED, after it FAILED.

Everything a controller does to its container happens in that one coroutine, in order: a new
desired state or the task's removal only wakes it up. So a removal can never race a create
that is still running in a thread, and nothing is ever half-done behind its back.

The controller trusts the runtime's files over any memory: it finds its container by name
(`SERVICE.SLOT.TASKID`) or by the id the worker found through the task label, so an agent
that crashed at any point resumes where the container actually is — a created container is
started, a running one adopted, an exited one reported — and never runs a task twice.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from flotilla.proto import objects_pb2 as pb
from flotilla.runtime import errors
from flotilla.runtime.containers import ContainerInfo
from flotilla.runtime.imaging.service import ImageService
from flotilla.runtime.runtime import Runtime

from .reporter import Reporter
from .task_container import container_name, container_spec, grace_seconds
from .task_networks import TaskNetworks

log = logging.getLogger("flotilla.agent.controller")

MESSAGES = {
    pb.ACCEPTED: "accepted", pb.PREPARING: "preparing", pb.READY: "prepared", pb.STARTING: "starting",
    pb.RUNNING: "started", pb.COMPLETE: "finished", pb.SHUTDOWN: "shutdown", pb.FAILED: "started",
    pb.REJECTED: "rejected",
}
LIVE = ("running", "paused")
KILL_WAIT = 10.0  # seconds for a SIGKILLed container's shim to report the exit before the runtime's fallback


async def _exited(pidfd: int, timeout: float) -> bool:
    """Whether the process behind `pidfd` exits within `timeout` seconds (awaited on the loop)."""
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        await asyncio.wait_for(exited, timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)


class TaskController:
    """Drives one task's container toward what the manager wants."""

    def __init__(self, task: pb.Task, runtime: Runtime, reporter: Reporter, node_id: str,
                 container_id: str | None = None, images: ImageService | None = None,
                 networks: TaskNetworks | None = None) -> None:
        self.task = task
        self.container_id = container_id
        self._rt = runtime
        self._images = images
        self._networks = networks or TaskNetworks(runtime)
        self._reporter = reporter
        self._node_id = node_id
        observed = reporter.observed(task.id)
        self.state = max(task.status.state, observed.state if observed else 0, pb.ASSIGNED)
        self._changed = asyncio.Event()
        self._removed = False
        self._job: asyncio.Task | None = None

    @property
    def task_id(self) -> str:
        return self.task.id

    # -- what the worker calls ---------------------------------------------------------
    def start(self) -> None:
        self._job = asyncio.get_running_loop().create_task(self._run(), name=f"task {self.task.id}")

    def update(self, task: pb.Task) -> None:
        """A newer version of the task (usually a raised desired state)."""
        self.task = task
        self._changed.set()

    def remove(self) -> None:
        """The task left the assignments: shut its container down and delete it."""
        self._removed = True
        self._changed.set()

    async def wait_removed(self) -> None:
        """Until the container is gone (after `remove`)."""
        if self._job is not None:
            await asyncio.shield(self._job)

    def cancel(self) -> None:
        """The agent is stopping: leave the container exactly as it is for the next agent."""
        if self._job is not None:
            self._job.cancel()

    # -- the one coroutine -------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._drive()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one task's surprise must not take the agent down
            log.exception("task %s: controller failed", self.task.id)
            self._fail(f"agent: {exc}")
        while not self._removed and self.task.desired_state < pb.REMOVE:
            self._changed.clear()
            if self.state <= pb.RUNNING and self._stop_wanted():
                await self._shutdown()  # e.g. a failure report raced a desired state change
            await self._changed.wait()
        await self._teardown()
        if self.task.spec.networks:  # its cluster networks go too when no other task here uses them
            await self._networks.remove_unused()

    async def _drive(self) -> None:
        info = await self._find()
        if self.state > pb.RUNNING:  # ended already (the manager's view or ours): never run it again
            if info is not None and info.status in LIVE:
                await self._stop(info.id)
            return
        if info is None:
            if self.state >= pb.STARTING:
                self._report(pb.FAILED, err="task: the container was removed behind the agent's back")
                return
            if self._stop_wanted():
                self._report(pb.SHUTDOWN)
                return
            info = await self._prepare()
            if info is None:
                return
        if info.status == "created":
            if self._stop_wanted():
                self._report(pb.SHUTDOWN)
                return
            self._report(pb.READY)
            if not await self._start(info.id):
                return
        elif info.status in LIVE:
            self._report(pb.RUNNING, info=info)
        await self._supervise(info.id)

    async def _prepare(self) -> ContainerInfo | None:
        """ACCEPTED, PREPARING (the image pulled if absent), the container created; REJECTED
        with the reason on any error."""
        self._report(pb.ACCEPTED)
        self._report(pb.PREPARING)
        try:
            spec = container_spec(self.task, self._node_id)  # a bad spec is refused before any pull or network
            await self._ensure_image(spec.image)
            async with self._networks.attached(self.task) as nets:
                if nets:
                    spec = container_spec(self.task, self._node_id, nets[0].network, nets[0].aliases)
                info = await asyncio.to_thread(self._rt.create, spec)
                self.container_id = info.id
                for extra in nets[1:]:
                    await asyncio.to_thread(self._rt.network_connect, extra.network, info.id, "", extra.aliases)
        except errors.RuntimeFault as exc:
            self._report(pb.REJECTED, err=str(exc))
            return None
        self.container_id = info.id
        return info

    async def _ensure_image(self, ref: str) -> None:
        """The image is local, or pulled from its registry (as Docker's agent does in Prepare)."""
        try:
            await asyncio.to_thread(self._rt.image, ref)
            return
        except errors.NotFound:
            if self._images is None:
                raise errors.NotFound(f"No such image: {ref}") from None
        try:
            await asyncio.to_thread(self._images.pull, ref)
        except errors.RuntimeFault as exc:
            raise type(exc)(f"pulling {ref}: {exc}") from None
        log.info("task %s: pulled %s", self.task.id, ref)

    async def _start(self, cid: str) -> bool:
        self._report(pb.STARTING)
        try:
            await asyncio.to_thread(self._rt.start, cid)
        except errors.StartFailed as exc:
            self._report(pb.FAILED, err=str(exc), exit_code=exc.exit_code)
            return False
        except errors.RuntimeFault as exc:
            self._report(pb.FAILED, err=str(exc))
            return False
        info = await asyncio.to_thread(self._rt.get, cid)
        self._report(pb.RUNNING, info=info)
        return True

    async def _supervise(self, cid: str) -> None:
        """Wait for the exit (COMPLETE / FAILED) or for the manager to want it stopped (SHUTDOWN)."""
        if not await self._wait_exit(cid):
            await self._shutdown()
            return
        info = await asyncio.to_thread(self._rt.get, cid)
        if info.status in LIVE:  # the shim went away but the state says otherwise: look again
            await asyncio.sleep(0.2)
            info = await asyncio.to_thread(self._rt.get, cid)
        code = int(info.exit_code or 0)
        if self._stop_wanted():
            self._report(pb.SHUTDOWN, info=info)
        elif code == 0:
            self._report(pb.COMPLETE, info=info)
        else:
            self._report(pb.FAILED, err=f"task: non-zero exit ({code})", info=info)

    async def _shutdown(self) -> None:
        cid = self.container_id
        if cid is not None:
            with contextlib.suppress(errors.NotFound):
                await self._stop(cid)
        self._report(pb.SHUTDOWN)

    async def _teardown(self) -> None:
        """Stop (gracefully) and delete the container; the task is no longer ours. A container
        this controller saw end is deleted by id at once: looking it up first would make the
        runtime finalize its exit (a durable write, under the runtime's lock) only for the
        record to be deleted right after — the cost that serialised a 200-task removal."""
        cid = self.container_id if self.state > pb.RUNNING else None
        if cid is None:
            info = await self._find()
            if info is None:
                return
            cid = info.id
            if info.status in LIVE:
                with contextlib.suppress(errors.NotFound):
                    await self._stop(cid)
        with contextlib.suppress(errors.NotFound):
            await asyncio.to_thread(self._rt.remove, cid, True)  # force: kills whatever still runs
            log.info("task %s: container %s removed", self.task.id, cid[:12])

    # -- helpers -----------------------------------------------------------------------
    def _stop_wanted(self) -> bool:
        return self._removed or self.task.desired_state > pb.RUNNING

    async def _find(self) -> ContainerInfo | None:
        """The task's container: by the id the worker found, else by its name."""
        for ref in filter(None, (self.container_id, container_name(self.task))):
            try:
                info = await asyncio.to_thread(self._rt.get, ref)
            except errors.NotFound:
                continue
            self.container_id = info.id
            return info
        return None

    async def _wait_exit(self, cid: str) -> bool:
        """True once the container's shim has exited; False as soon as a stop is wanted."""
        try:
            fd = await asyncio.to_thread(self._rt.shim_pidfd, cid)
        except errors.NotFound:
            return True
        if fd is None:
            return True
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
        try:
            while True:
                self._changed.clear()
                if self._stop_wanted():
                    return False
                changed = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait({exited, changed}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if exited.done():
                    return True
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def _stop(self, cid: str) -> None:
        """The stop signal, the task's grace period, then SIGKILL — all awaited on the shim's
        pidfd, without holding a thread or the runtime's lock while waiting, so hundreds of
        tasks stop at once and their kills after the grace do not queue behind each other. The
        grace is skipped when the kernel dropped the stop signal (`Runtime.stop` says why)."""
        fd = await asyncio.to_thread(self._rt.shim_pidfd, cid)
        if fd is None:
            return  # not running
        try:
            for sig, wait in ((self.task.spec.container.stop_signal or "SIGTERM", grace_seconds(self.task)),
                              ("SIGKILL", KILL_WAIT)):
                try:
                    reached = await asyncio.to_thread(self._rt.kill, cid, sig)
                except errors.Conflict:
                    return  # not running any more
                if await _exited(fd, wait if reached else 0):
                    return
        finally:
            os.close(fd)
        await asyncio.to_thread(self._rt.stop, cid, 0)  # the runtime's last resort: kill by cgroup

    def _fail(self, err: str) -> None:
        self._report(pb.FAILED if self.state >= pb.STARTING else pb.REJECTED, err=err)

    def _report(self, state: int, err: str = "", info: ContainerInfo | None = None, exit_code: int | None = None) -> None:
        """Record and queue a state; states only move forward."""
        if state <= self.state:
            return
        self.state = state
        status = pb.TaskStatus(state=state, message=MESSAGES.get(state, ""), err=err)
        status.timestamp.GetCurrentTime()
        if info is not None:
            status.container_status.container_id = info.id
            status.container_status.pid = int(info.pid or 0) if state == pb.RUNNING else 0
            status.container_status.exit_code = int(info.exit_code or 0) if state > pb.RUNNING else 0
        elif self.container_id:
            status.container_status.container_id = self.container_id
        if exit_code is not None:
            status.container_status.exit_code = exit_code
        self._reporter.report(self.task.id, status)
