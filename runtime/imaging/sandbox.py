"""Where a Dockerfile RUN step runs: its own network namespace and a cgroup under the runtime's parent.

A build container must not share the host's network (a RUN step could reach any address the
host can) and must be counted and killable like every other container. The Runtime hands its
cgroup driver and network manager to the builder through `Runtime.image_service()`; each RUN
step then gets a cgroup `build-<hex>` under the runtime's cgroup parent and a network
namespace with only `lo` up (Docker's network `none`), both removed when the step ends.

Crash safety: the namespace is registered with the network manager like a container's, so
`Runtime.recover()` (which releases every network state whose container is not running)
deletes one left by a kill -9; `recover()` here removes leftover `build-*` cgroups.
"""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..cgroups import CgroupDriver, Resources

if TYPE_CHECKING:  # the network stack (pyroute2) loads only where a runtime hands one in
    from ..network.manager import NetworkManager

PREFIX = "build-"
HOSTNAME = "buildkitsandbox"  # what Docker's builder names its RUN containers


@dataclass(frozen=True)
class Placement:
    """What the shim of one RUN step joins: a netns path and the cgroup directories."""

    netns: str
    cgroups: list[str]


class BuildSandbox:
    """Creates and removes the per-RUN network namespace and cgroup of one runtime."""

    def __init__(self, cgroups: CgroupDriver, network: NetworkManager) -> None:
        self.cgroups = cgroups
        self.network = network

    @contextmanager
    def placement(self) -> Iterator[Placement]:
        """A fresh cgroup and netns for one RUN step; both are gone when the block ends."""
        name = PREFIX + secrets.token_hex(8)
        cgroup = self.cgroups.cgroup(name)
        cgroup.create(Resources())
        try:
            netns = self.network.prepare(name, HOSTNAME)
            try:
                yield Placement(netns, [str(p) for p in cgroup.paths()])
            finally:
                self.network.release(name)
        finally:
            cgroup.destroy()  # kills whatever the step left running (a daemonized child)

    def leftovers(self) -> list[str]:
        """Names of `build-*` cgroups under the parent (left by a crash mid RUN)."""
        names: set[str] = set()
        for hierarchy in set(self.cgroups.hierarchies.values()):
            parent = hierarchy / self.cgroups.parent
            if parent.is_dir():
                names.update(p.name for p in parent.glob(PREFIX + "*") if p.is_dir())
        return sorted(names)

    def recover(self) -> None:
        """At start-up, before any build: remove the cgroups of RUN steps a crash interrupted."""
        for name in self.leftovers():
            self.cgroups.cgroup(name).destroy()
