"""What it costs a fresh process to join its cgroups, the way the shim's container child does.

    .venv/bin/python bench/cgroup_join.py [--runs 30]

A new single-threaded process joins a cgroup in every v1 hierarchy of this host by writing `0`
either to `cgroup.procs` (what the shim did before, and what runc does) or to `tasks` (what it
does now), one sample of each in turn so both see the same load. The first `cgroup.procs` write
waits for the kernel's global threadgroup rwsem to enter its slow mode (an RCU grace period,
~10 ms); `0` written to `tasks` migrates only the calling thread, which the kernel does without
that lock. The cgroup2 directory is not measured here: the shim's child is born in it
(`clone3(CLONE_INTO_CGROUP)`), which needs no migration at all. Needs root; every cgroup it makes
is removed at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CHILD = r"""
import os, sys, time
t0 = time.perf_counter()
for d in sys.argv[2:]:
    fd = os.open(d + "/" + sys.argv[1], os.O_WRONLY)
    os.write(fd, b"0")
    os.close(fd)
print((time.perf_counter() - t0) * 1000)
"""


def v1_hierarchies() -> list[Path]:
    return [p for p in sorted(ROOT.iterdir()) if not p.is_symlink() and (p / "tasks").exists()]


def join_ms(how: str, dirs: list[Path]) -> float:
    out = subprocess.run([sys.executable, "-S", "-c", CHILD, how, *map(str, dirs)], check=True,
                         capture_output=True, text=True).stdout
    return float(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark needs root (it creates cgroups)")
    hierarchies = v1_hierarchies()
    if not hierarchies:
        raise SystemExit(f"no cgroup v1 hierarchy under {ROOT}: on a pure cgroup2 host nothing is written")
    name = f"flotilla-bench-{uuid.uuid4().hex[:8]}"
    made: list[Path] = []
    samples: dict[str, list[float]] = {"cgroup.procs": [], "tasks": []}
    try:
        for h in hierarchies:
            d = h / name
            d.mkdir()
            made.append(d)
            for key in ("cpuset.cpus", "cpuset.mems"):  # an empty v1 cpuset refuses tasks
                if (d / key).exists():
                    (d / key).write_text((h / key).read_text())
        for _ in range(args.runs):
            for how, out in samples.items():
                out.append(join_ms(how, made))
                time.sleep(0.05)  # let the rwsem leave its slow mode again, as between two starts
    finally:
        for d in made:
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)  # the last child may still be exiting
    print(f"joining {len(made)} v1 hierarchies, median of {args.runs} fresh processes each:")
    for how, ms in samples.items():
        print(f"  write 0 to {how:13s} {statistics.median(ms):7.2f} ms   p90 {sorted(ms)[len(ms) * 9 // 10]:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
