"""What networking adds to a container start: `Runtime.start` with `--network none`, the default
`bridge` and a user network, measured in one run, rounds interleaved so load hits all alike.

The default bridge is kept up by one running container (it exists only while used; the cost
of the first container, which creates it, is printed apart). The difference to `none` is the time `run` spends wiring the network (namespace, veth pair,
address, route, /etc files, plus for `-p` the DNAT rules); the goal of issue 4 is under 5 ms.
The library-only wiring (prepare + connect, no container) is measured by bench/network.py.

    .venv/bin/python bench/network_run.py [--runs 30]

Everything runs on a temporary state root, its own cgroup parent and subnets no host route
covers, and is removed at the end.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def free_subnet() -> str:
    """A /24 in 10.128.0.0/9 that no route of this host overlaps."""
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    taken = []
    for line in out.splitlines():
        words = line.split()
        dst = words[1] if words[0] in ("local", "broadcast", "unicast") else words[0]
        if dst[:1].isdigit():
            taken.append(ipaddress.ip_network(dst, strict=False))
    while True:
        cand = ipaddress.ip_network((int(ipaddress.ip_address("10.128.0.0")) + (random.randrange(1 << 15) << 8), 24))
        if not any(cand.overlaps(t) for t in taken):
            return str(cand)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="starts per mode (default 30)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark needs root (namespaces, cgroups, netlink, iptables)")
    from flotilla.runtime.runtime import Runtime
    from flotilla.runtime.spec import ContainerSpec
    from flotilla.swarmd.busybox_image import write_busybox_tar

    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp_name:
        tmp = Path(tmp_name)
        rt = Runtime(tmp / "root", cgroup_parent=f"flotilla-bench-{suffix}", default_subnet=free_subnet())
        net = f"bench-{suffix}"
        try:
            rt.import_image(write_busybox_tar(tmp / "busybox.tar"), "busybox", {"Cmd": ["sh"]})
            rt.net.nm.create_network(net, subnet=free_subnet())
            # the default bridge exists only while a container uses it: keep one there, as on a
            # host with running containers (the first container's extra cost is printed below)
            keeper = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "600"]))
            t0 = time.perf_counter()
            rt.start(keeper.id)
            first_bridge = (time.perf_counter() - t0) * 1000
            modes = {"none": {"network_mode": "none"}, "bridge": {"network_mode": "bridge"},
                     "user network": {"network_mode": net}, "bridge -p 80": {"network_mode": "bridge", "ports": ["80"]}}
            samples: dict[str, list[float]] = {m: [] for m in modes}
            for round_ in range(args.runs + 1):  # round 0 warms up
                for mode, kw in modes.items():
                    c = rt.create(ContainerSpec(image="busybox", cmd=["sleep", "600"], **kw))
                    t0 = time.perf_counter()
                    rt.start(c.id)
                    elapsed = (time.perf_counter() - t0) * 1000
                    rt.remove(c.id, force=True)
                    if round_:
                        samples[mode].append(elapsed)
        finally:
            for c in rt.list(all=True):
                rt.remove(c.id, force=True)
            try:
                rt.net.nm.remove_network(net)
            except Exception:  # noqa: BLE001 (never created: nothing to remove)
                pass
            rt.close()
            rt.close_cgroup_parent()
    base = statistics.median(samples["none"])
    print(f"Runtime.start of `sleep`, median of {args.runs} (load average {os.getloadavg()[0]:.1f})")
    for mode, values in samples.items():
        med = statistics.median(values)
        p90 = sorted(values)[int(len(values) * 0.9) - 1]
        extra = "" if mode == "none" else f"   network wiring: +{med - base:.1f} ms"
        print(f"  {mode:14s} {med:6.1f} ms (p90 {p90:6.1f}){extra}")
    print(f"  first container on the default bridge (creates bridge and rules): {first_bridge:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
