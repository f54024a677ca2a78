"""Image operations end to end through `swarmctl` and a real agent, side by side with skopeo.

Not a test: prints times, ratios and MB/s. Run as root from the repository:
    .venv/bin/python bench/images_cli.py [--mb 100] [--layers 5]

What bench/images.py measures on the library, measured here as a user sees it (CLI start-up,
gRPC streaming of progress, the agent's threads included):
  1. `swarmctl pull` of a generated multi-layer gzip image vs `skopeo copy docker:// oci:`;
  2. `swarmctl push` to an empty registry vs `skopeo copy oci: docker://`;
  3. `swarmctl build` of a two-stage Dockerfile: cold (RUN in its own netns + cgroup) and warm
     (every step cached; the context is tarred and sent each time).
Everything runs on loopback in a temp dir with its own agent; all is removed at the end.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "bench"))

from cli_harness import shut_down, started_agent  # noqa: E402
from conftest import build_busybox_rootfs_tar  # noqa: E402
from images import generate_layers  # noqa: E402
from images_support import run_registry, skopeo, write_oci_layout  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--layers", type=int, default=5)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/images_cli.py needs root (it runs an agent)")
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-images-cli-"))
    os.environ["DOCKER_CONFIG"] = str(tmp / "docker")  # the agent's credentials stay in the temp dir
    agent = None
    try:
        agent = started_agent(tmp / "agent", build_busybox_rootfs_tar(tmp / "busybox.tar"))
        run(tmp, opts, agent)
    finally:
        if agent is not None:
            shut_down(agent)
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path, opts: argparse.Namespace, agent) -> None:
    print(f"generating a {opts.mb} MB, {opts.layers}-layer image ...", flush=True)
    write_oci_layout(tmp / "src", generate_layers(opts.mb, opts.layers), compress="gzip")
    mb = sum(p.stat().st_size for p in (tmp / "src" / "blobs" / "sha256").iterdir()) / 1e6
    for d in "abc":
        (tmp / d).mkdir()
    with run_registry(tmp / "a") as reg, run_registry(tmp / "b") as empty1, run_registry(tmp / "c") as empty2:
        ref = f"{reg.host}/bench/big:1"
        skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp / 'src'}:latest", f"docker://{ref}")
        t_pull = timed(lambda: agent.ctl("pull", ref, timeout=600))
        t_skopeo = timed(lambda: skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp / 'out'}:x"))
        print(f"\npull  {mb:.1f} MB compressed, {opts.layers} layers")
        print(f"  swarmctl pull (download+verify+unpack) {t_pull:6.2f} s  {mb / t_pull:6.1f} MB/s")
        print(f"  skopeo copy   (download+verify)        {t_skopeo:6.2f} s  {mb / t_skopeo:6.1f} MB/s")
        print(f"  ratio {t_pull / t_skopeo:.2f}")
        target = f"{empty1.host}/bench/big:1"
        agent.ctl("tag", ref, target)
        t_push = timed(lambda: agent.ctl("push", target, timeout=600))
        t_skopeo = timed(lambda: skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp / 'src'}:latest",
                                        f"docker://{empty2.host}/bench/big:1"))
        print(f"\npush  {mb:.1f} MB to an empty registry")
        print(f"  swarmctl push {t_push:6.2f} s  {mb / t_push:6.1f} MB/s")
        print(f"  skopeo copy   {t_skopeo:6.2f} s  {mb / t_skopeo:6.1f} MB/s")
        print(f"  ratio {t_push / t_skopeo:.2f}")
        agent.ctl("rmi", ref, target)
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "app.txt").write_text("app\n" * 10000)
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS build\nWORKDIR /src\nCOPY app.txt .\nRUN wc -l app.txt > count.txt\n"
        "FROM busybox\nCOPY --from=build /src/count.txt /count.txt\nCMD [\"cat\", \"/count.txt\"]\n")
    build = lambda: agent.ctl("build", "-t", "bench-build:1", str(ctx))  # noqa: E731
    t_cold = timed(build)
    warm = [timed(build) for _ in range(7)]
    print("\nswarmctl build (two stages, COPY + RUN)")
    print(f"  cold {t_cold * 1000:6.0f} ms   warm (all cached) min {min(warm) * 1000:5.0f} ms"
          f"  median {statistics.median(warm) * 1000:5.0f} ms")


if __name__ == "__main__":
    main()
