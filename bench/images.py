"""Benchmark of image handling against a local docker-registry, side by side with skopeo.

Not a test: prints times, ratios and MB/s. Run as root from the repository:
    .venv/bin/python bench/images.py [--mb 100] [--layers 5]

Measures
  1. pull of a generated ~100 MB, 5-layer gzip image: Flotilla (download + verify + unpack)
     vs skopeo copy docker:// -> oci: (download + verify, no unpack);
  2. push of the same image to an empty registry: Flotilla vs skopeo copy oci: -> docker://;
  3. warm rebuild of an unchanged two-stage Dockerfile (every step from the cache);
  4. disk used by 20 containers of one image (layers shared as overlay lower dirs).
Everything runs on loopback; all temp dirs, registries and containers are removed at the end.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import build_busybox_rootfs_tar  # noqa: E402
from images_support import run_registry, skopeo, tar_bytes, write_oci_layout  # noqa: E402

from flotilla.runtime.images import ImageStore  # noqa: E402
from flotilla.runtime.imaging.auth import CredentialStore  # noqa: E402
from flotilla.runtime.imaging.build import BuildOptions  # noqa: E402
from flotilla.runtime.imaging.service import ImageService  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def du(path: Path) -> int:
    """Bytes allocated below `path`, hard links counted once (as `du` does)."""
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def generate_layers(total_mb: int, count: int) -> list[bytes]:
    """Half random (incompressible), half repetitive data, so gzip does real work both ways."""
    per = total_mb * 1024 * 1024 // count
    layers = []
    for i in range(count):
        files = {f"layer{i}": None, f"layer{i}/random.bin": os.urandom(per // 2),
                 f"layer{i}/text.txt": (f"line {i} of a repetitive file\n" * (per // 2 // 28 + 1)).encode()[: per // 2]}
        layers.append(tar_bytes(files))
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--containers", type=int, default=20)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/images.py needs root (layer ownership, overlay, containers)")
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-images-"))
    try:
        run(tmp, opts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path, opts: argparse.Namespace) -> None:
    print(f"generating a {opts.mb} MB, {opts.layers}-layer image ...", flush=True)
    info = write_oci_layout(tmp / "src", generate_layers(opts.mb, opts.layers), compress="gzip")
    blob_bytes = sum(p.stat().st_size for p in (tmp / "src" / "blobs" / "sha256").iterdir())
    mb = blob_bytes / 1e6
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    (tmp / "c").mkdir()
    with run_registry(tmp / "a") as reg, run_registry(tmp / "b") as empty1, run_registry(tmp / "c") as empty2:
        skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp / 'src'}:latest", f"docker://{reg.host}/bench/big:1")
        svc = ImageService(ImageStore(tmp / "root"), CredentialStore(tmp / "docker" / "config.json"))
        ref = f"{reg.host}/bench/big:1"
        t_pull = timed(lambda: svc.pull(ref))
        t_skopeo_pull = timed(lambda: skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp / 'skopeo-out'}:x"))
        t_unpack = timed(lambda: reunpack(svc, info["config_digest"]))
        t_tar = timed(lambda: native_unpack(tmp / "skopeo-out", tmp / "tar-out"))
        print(f"\npull  {mb:7.1f} MB compressed ({opts.layers} layers)")
        print(f"  flotilla (download+verify+unpack) {t_pull:6.2f} s  {mb / t_pull:7.1f} MB/s")
        print(f"  skopeo   (download+verify)        {t_skopeo_pull:6.2f} s  {mb / t_skopeo_pull:7.1f} MB/s")
        print(f"  ratio flotilla/skopeo             {t_pull / t_skopeo_pull:6.2f}")
        print(f"  of which unpack: flotilla (verify diff ids, safe extract) {t_unpack:6.2f} s"
              f" vs GNU tar -xzf of the same layers {t_tar:6.2f} s (ratio {t_unpack / t_tar:.2f})")
        image_id = info["config_digest"]
        svc.images.tag(image_id, f"{empty1.host}/bench/big:1")
        t_push = timed(lambda: svc.push(f"{empty1.host}/bench/big:1"))
        t_skopeo_push = timed(lambda: skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp / 'src'}:latest",
                                             f"docker://{empty2.host}/bench/big:1"))
        print(f"\npush  {mb:7.1f} MB to an empty registry")
        print(f"  flotilla {t_push:6.2f} s  {mb / t_push:7.1f} MB/s")
        print(f"  skopeo   {t_skopeo_push:6.2f} s  {mb / t_skopeo_push:7.1f} MB/s")
        print(f"  ratio flotilla/skopeo {t_push / t_skopeo_push:6.2f}")
    bench_build(tmp, svc)
    bench_disk(tmp, opts.containers)


def reunpack(svc: ImageService, image_id: str) -> None:
    """Unpack the image's layers again from their blobs (the unpack half of a pull)."""
    from flotilla.runtime.images import chain_ids
    from flotilla.runtime.imaging.unpack import unpack_layer

    diff_ids = svc.images.oci_config(image_id)["rootfs"]["diff_ids"]
    blobs = [d["digest"] for d in __import__("json").loads(svc.images.content.read(svc.images.image(image_id).digest))["layers"]]
    for chain in chain_ids(diff_ids):
        shutil.rmtree(svc.images.layers_dir / chain[7:])
    for chain, diff_id, blob in zip(chain_ids(diff_ids), diff_ids, blobs):
        unpack_layer(svc.images, chain, diff_id, blob)


def native_unpack(oci_dir: Path, dest: Path) -> None:
    """The native peer of unpacking: GNU tar over each layer blob skopeo fetched (no verification)."""
    import json

    index = json.loads((oci_dir / "index.json").read_text())
    manifest = json.loads((oci_dir / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    for i, layer in enumerate(manifest["layers"]):
        target = dest / str(i)
        target.mkdir(parents=True)
        subprocess.run(["tar", "-xzf", str(oci_dir / "blobs" / "sha256" / layer["digest"][7:]), "-C", str(target)], check=True)


def bench_build(tmp: Path, svc: ImageService) -> None:
    svc.images.import_image(build_busybox_rootfs_tar(tmp / "busybox.tar"), "busybox:latest")
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "app.txt").write_text("app\n" * 10000)
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS build\nWORKDIR /src\nCOPY app.txt .\nRUN wc -l app.txt > count.txt\n"
        "FROM busybox\nCOPY --from=build /src/count.txt /count.txt\nCMD [\"cat\", \"/count.txt\"]\n")
    opts = BuildOptions(tags=["bench-build:1"])
    t_cold = timed(lambda: svc.build(ctx, opts))
    warm = [timed(lambda: svc.build(ctx, opts)) for _ in range(5)]
    print("\nbuild (two stages, COPY + RUN)")
    print(f"  cold {t_cold * 1000:7.1f} ms   warm rebuild (all cached) min {min(warm) * 1000:6.1f} ms  median {sorted(warm)[2] * 1000:6.1f} ms")


def bench_disk(tmp: Path, count: int) -> None:
    from flotilla.runtime.runtime import Runtime
    from flotilla.runtime.spec import ContainerSpec

    rt = Runtime(tmp / "rt", cgroup_parent=f"flotilla-bench-{os.getpid()}")
    try:
        image = rt.import_image(build_busybox_rootfs_tar(tmp / "busybox2.tar"), "busybox:latest")
        layers = du(tmp / "rt" / "layers")
        ids = [rt.create(ContainerSpec(image="busybox", cmd=["true"])).id for _ in range(count)]
        containers = du(tmp / "rt" / "containers")
        print(f"\ndisk: {count} containers of one {image.size / 1e6:.1f} MB image")
        print(f"  shared layer dirs {layers / 1e6:7.2f} MB (once), per-container state {containers / count / 1e3:7.1f} kB")
        print(f"  total {(layers + containers) / 1e6:7.2f} MB vs {count * layers / 1e6:7.1f} MB if each container had a copy"
              f" (ratio {(layers + containers) / (count * layers):.3f})")
        for cid in ids:
            rt.remove(cid, force=True)
    finally:
        rt.close_cgroup_parent()


if __name__ == "__main__":
    main()
