"""Spawn-to-exit time of /bin/true through the shim wrapper, side by side with `runc run`,
and the memory of an idle shim.

    .venv/bin/python bench/shim_spawn.py [--runs 100]

One run = write shim.conf + `shim.run()` + `ShimProcess.wait()` (overlay rootfs with busybox as
the only lower dir, all six namespaces, Docker's masks and capabilities). The runc run uses a
plain rootfs dir from `runc spec` (no overlay), which favours runc. Needs root.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import build_busybox_rootfs_tar  # noqa: E402  (the tests' busybox image, built locally)

from flotilla.runtime import shim  # noqa: E402


def shim_once(root: Path, lower: Path, i: int) -> float:
    bundle = root / f"b{i}"
    for d in ("upper", "work", "rootfs"):
        (bundle / d).mkdir(parents=True)
    cfg = shim.ShimConfig(args=["/bin/true"], lowerdir=[str(lower)], upperdir=str(bundle / "upper"),
                          workdir=str(bundle / "work"), rootfs=str(bundle / "rootfs"),
                          log=str(bundle / "log.json"), hostname="bench")
    start = time.perf_counter()
    cfg.write(bundle / "shim.conf")
    status = shim.run(bundle).wait(timeout=30)
    elapsed = time.perf_counter() - start
    if status.code != 0:
        raise SystemExit(f"/bin/true exited {status.code} through the shim")
    shutil.rmtree(bundle)
    return elapsed


def runc_once(root: Path, bundle: Path, state: Path, i: int) -> float:
    start = time.perf_counter()
    subprocess.run(["runc", "--root", str(state), "run", "-b", str(bundle), f"bench-{root.name}-{i}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def idle_shim_memory(root: Path, lower: Path) -> tuple[int, int]:
    """(VmRSS, private dirty) in kB of a shim whose container sleeps."""
    bundle = root / "idle"
    for d in ("upper", "work", "rootfs"):
        (bundle / d).mkdir(parents=True)
    shim.ShimConfig(args=["sleep", "1000"], lowerdir=[str(lower)], upperdir=str(bundle / "upper"),
                    workdir=str(bundle / "work"), rootfs=str(bundle / "rootfs"),
                    log=str(bundle / "log.json")).write(bundle / "shim.conf")
    proc = shim.run(bundle)
    try:
        time.sleep(0.3)
        rollup = dict(line.split(":", 1) for line in open(f"/proc/{proc.shim_pid}/smaps_rollup").read().splitlines()[1:])
        kb = {k: int(v.split()[0]) for k, v in rollup.items()}
        return kb["Rss"], kb["Private_Dirty"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def summary(name: str, times: list[float]) -> float:
    ms = sorted(t * 1000 for t in times)
    med = statistics.median(ms)
    print(f"{name:>6}: median {med:6.2f} ms   p10 {ms[len(ms) // 10]:6.2f}   p90 {ms[len(ms) * 9 // 10]:6.2f}   n={len(ms)}")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (namespaces, overlayfs)")
    root = Path(tempfile.mkdtemp(prefix=f"flotilla-bench-{uuid.uuid4().hex[:8]}-"))
    try:
        lower = root / "lower"
        with tarfile.open(build_busybox_rootfs_tar(root / "busybox.tar")) as tar:
            tar.extractall(lower, filter="fully_trusted")
        for i in range(5):  # warm caches
            shim_once(root, lower, 1000 + i)
        ours = summary("shim", [shim_once(root, lower, i) for i in range(args.runs)])
        rss, dirty = idle_shim_memory(root, lower)
        print(f"idle shim: VmRSS {rss} kB, private dirty {dirty} kB (the rest is the shared, read-only binary)")
        if shutil.which("runc"):
            bundle = root / "runc"
            bundle.mkdir()
            subprocess.run(["runc", "spec", "-b", str(bundle)], check=True)
            spec = json.loads((bundle / "config.json").read_text())
            spec["process"].update(terminal=False, args=["/bin/true"])
            spec["root"] = {"path": str(lower), "readonly": True}
            (bundle / "config.json").write_text(json.dumps(spec))
            state = root / "runc-state"
            for i in range(5):
                runc_once(root, bundle, state, 1000 + i)
            theirs = summary("runc", [runc_once(root, bundle, state, i) for i in range(args.runs)])
            print(f"ratio shim/runc: {ours / theirs:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
