"""RUN: one process in a throwaway container over the build's current layers, via the shim.

The container gets an overlay of the current layers with a fresh upper dir; after the
process ends, the upper dir (with overlay whiteouts for deletions) is the step's new layer.
It uses the runtime's own shim (`flotilla.runtime.shim`) with Docker's default capabilities,
masked paths and namespaces. The network is never the host's: with a `Placement` (sandbox.py:
a netns with `lo` up and a cgroup under the runtime's parent, what the agent's builds get)
the step joins those; without one (the library used alone) the shim gives it a new, empty
network namespace. The bundle lives under `layers/.tmp-*`, so after a crash the runtime's
sweep removes it; the overlay is only ever mounted inside the container's own mount
namespace, so no mount can leak.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .. import shim
from ..errors import InvalidArgument
from ..fsutil import remove_tree
from .sandbox import HOSTNAME, Placement


@dataclass
class RunResult:
    """Exit code, the combined output lines, and the bundle holding the upper dir."""

    exit_code: int
    output: list[str]
    bundle: Path

    @property
    def upper(self) -> Path:
        return self.bundle / "upper"

    def discard(self) -> None:
        remove_tree(self.bundle)


def run_step(scratch_dir: Path, lower_dirs: list[str], args: list[str], env: list[str], cwd: str, user: str,
             placement: Placement | None = None) -> RunResult:
    """Run `args` to completion; the caller turns `result.upper` into a layer, then `discard()`s."""
    bundle = scratch_dir / f".tmp-run-{secrets.token_hex(8)}"
    for sub in ("upper", "work", "rootfs", "empty"):
        (bundle / sub).mkdir(parents=True)
    try:
        conf = shim.ShimConfig(
            args=args, env=env, cwd=cwd or "/", user=user or None, hostname=HOSTNAME,
            lowerdir=lower_dirs or [str(bundle / "empty")], upperdir=str(bundle / "upper"),
            workdir=str(bundle / "work"), rootfs=str(bundle / "rootfs"),
            namespaces=[n for n in shim.ALL_NAMESPACES if n != "net" or placement is None],
            netns=placement.netns if placement else None, cgroups=placement.cgroups if placement else [],
            log=str(bundle / "log.json"))
        conf.write(bundle / "shim.conf")
        try:
            proc = shim.run(bundle)
        except shim.ShimError as e:
            raise InvalidArgument(f"the command {args!r} could not start: {e}") from None
        status = proc.wait()
        lines = []
        log = bundle / "log.json"
        if log.exists():
            text = "".join(json.loads(line)["log"] for line in log.read_text().splitlines() if line.strip())
            lines = text.splitlines()
        for name in ("log.json", "shim.conf", "exit", "shim.pid", "init.pid", "attach.sock"):
            (bundle / name).unlink(missing_ok=True)
        return RunResult(status.code, lines, bundle)
    except BaseException:
        remove_tree(bundle)
        raise


def ensure_root() -> None:
    """RUN needs root (namespaces, overlay); say so instead of failing deep inside the shim."""
    if os.geteuid() != 0:
        raise InvalidArgument("RUN instructions need root (namespaces and overlayfs): build as root or remove RUN")
