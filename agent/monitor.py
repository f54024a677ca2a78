"""The agent's container monitor: restart policies and `--rm` auto-removal.

For every running container the monitor registers the shim's pidfd with the event loop
(`loop.add_reader`), so waiting on hundreds of containers costs no thread. When a shim exits
the monitor reads the container's state from the runtime (which derives it from files) and
applies the policy. Users' own lifecycle operations (stop, restart, kill, remove) are
bracketed by `user_operation`, so an exit they cause is never mistaken for a crash; the
server re-watches the container when the operation is done.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from flotilla.runtime import errors
from flotilla.runtime.runtime import Runtime

from .convert import to_epoch
from .manual_stops import ManualStops
from .restart_policy import Exited, next_delay, should_restart

log = logging.getLogger("flotilla.agent.monitor")


class Monitor:
    def __init__(self, runtime: Runtime, state_dir: Path) -> None:
        self._rt = runtime
        self.manual = ManualStops(state_dir / "manual-stop")
        self._pidfds: dict[str, int] = {}
        self._delays: dict[str, float] = {}
        self._busy: dict[str, int] = {}
        self.restarting: set[str] = set()  # waiting out a back-off: shown as Docker's "restarting"
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------
    async def start(self, adopted: list[str]) -> None:
        """Watch adopted containers and apply the policies missed while the agent was down."""
        for cid in adopted:
            await self.watch(cid)
        containers = await asyncio.to_thread(self._rt.list, True)
        self.manual.forget_all_but({c.id for c in containers})
        for info in containers:
            if info.id not in self._pidfds and info.status in ("exited", "dead"):
                self._spawn(self._handle_exit(info.id, daemon_start=True))

    def close(self) -> None:
        """Stop watching (the containers keep running; a new agent adopts them)."""
        self._closed = True
        loop = asyncio.get_running_loop()
        for fd in self._pidfds.values():
            loop.remove_reader(fd)
            os.close(fd)
        self._pidfds.clear()
        for task in self._tasks:
            task.cancel()

    @contextlib.asynccontextmanager
    async def user_operation(self, container_id: str, removes: bool = False) -> AsyncIterator[None]:
        """Bracket a user's stop/restart/kill/remove: exits during it are the user's doing.

        Afterwards the container is watched again; `removes`: not after it succeeded, since a
        removed container has nothing to watch (that saves a thread hop per `rm`).
        """
        self._busy[container_id] = self._busy.get(container_id, 0) + 1
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            self._busy[container_id] -= 1
            if not self._busy[container_id]:
                del self._busy[container_id]
            if not self._closed and not (removes and succeeded):
                await self.watch(container_id)

    # -- watching --------------------------------------------------------------------
    async def watch(self, container_id: str) -> None:
        """Follow a container that should be running; handle its exit at once if it is not."""
        if container_id in self._pidfds or self._closed:
            return
        try:
            pidfd = await asyncio.to_thread(self._rt.shim_pidfd, container_id)
        except errors.NotFound:
            return
        except errors.RuntimeFault as exc:  # never let watching fail the user's request
            log.warning("cannot watch %s: %s", container_id[:12], exc)
            return
        self.follow(container_id, pidfd)

    def follow(self, container_id: str, pidfd: int | None) -> None:
        """Watch through a shim pidfd the caller already opened (it passes to the monitor), so a
        start needs no second thread hop; None: the container is not running (any more)."""
        if container_id in self._pidfds or self._closed:  # a concurrent watch won the race
            if pidfd is not None:
                os.close(pidfd)
            return
        if pidfd is None:
            self._spawn(self._handle_exit(container_id))
            return
        self._pidfds[container_id] = pidfd
        asyncio.get_running_loop().add_reader(pidfd, self._shim_exited, container_id)

    def _shim_exited(self, container_id: str) -> None:
        pidfd = self._pidfds.pop(container_id, None)
        if pidfd is None:
            return
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        self._spawn(self._handle_exit(container_id))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- policy ----------------------------------------------------------------------
    async def _handle_exit(self, container_id: str, daemon_start: bool = False) -> None:
        if container_id in self._busy:
            return
        try:
            info = await asyncio.to_thread(self._rt.get, container_id)
        except errors.NotFound:
            self._forget(container_id)
            return
        if info.status in ("running", "paused"):
            await asyncio.sleep(0.2)  # its shim may have just exited: let the exit file land first
            await self.watch(container_id)
            return
        if info.status not in ("exited", "dead"):
            return
        spec = info.spec
        if spec.auto_remove:
            with contextlib.suppress(errors.NotFound):
                await asyncio.to_thread(self._rt.remove, container_id, True, True)  # as Docker: anonymous volumes too
            self._forget(container_id)
            return
        started, finished = to_epoch(info.started_at), to_epoch(info.finished_at)
        state = Exited(policy=spec.restart_policy.name, max_retries=spec.restart_policy.max_retries,
                       exit_code=int(info.exit_code or 0), restart_count=int(info.restart_count or 0),
                       manually_stopped=self.manual.is_marked(container_id),
                       ran_for=max(0.0, finished - started) if started and finished else 0.0)
        if not should_restart(state, daemon_start):
            self._delays.pop(container_id, None)
            return
        delay = next_delay(self._delays.get(container_id), state.ran_for)
        self._delays[container_id] = delay
        log.info("restarting %s (exit code %d) in %.1fs", info.name, state.exit_code, delay)
        self.restarting.add(container_id)
        try:
            await asyncio.sleep(delay)
        finally:
            self.restarting.discard(container_id)
        if container_id in self._busy or self._closed:
            return
        if daemon_start:
            self.manual.clear(container_id)
        elif self.manual.is_marked(container_id):
            return
        try:
            current = await asyncio.to_thread(self._rt.get, container_id)
            if current.status in ("running", "paused"):
                await self.watch(container_id)
                return
            await asyncio.to_thread(self._rt.record_restart, container_id)
            await asyncio.to_thread(self._rt.start, container_id)
        except errors.NotFound:
            self._forget(container_id)
            return
        except errors.RuntimeFault as exc:
            log.warning("restart of %s failed: %s", info.name, exc)
            self._spawn(self._handle_exit(container_id))
            return
        await self.watch(container_id)

    def _forget(self, container_id: str) -> None:
        self._delays.pop(container_id, None)
        self.manual.clear(container_id)
