"""End to end with the container runtime: images that were pulled, built or loaded really run.

The ImageService works on the Runtime's own ImageStore, so containers are created from the
same layer dirs the pull/build unpacked (shared overlay lower dirs), and rmi/prune through
the runtime garbage-collect what the image handling wrote.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from conftest import mounts_containing
from images_support import run_registry, skopeo, store_listing
from flotilla.runtime.errors import Conflict
from flotilla.runtime.imaging.auth import CredentialStore
from flotilla.runtime.imaging.build import BuildOptions
from flotilla.runtime.imaging.service import ImageService
from flotilla.runtime.runtime import Runtime
from flotilla.runtime.spec import ContainerSpec

pytestmark = pytest.mark.root


@pytest.fixture
def rt(tmp_path, unique):
    runtime = Runtime(tmp_path / "root", cgroup_parent=f"flotilla-test-{unique}")
    yield runtime
    for c in runtime.list(all=True):
        runtime.remove(c.id, force=True, volumes=True)
    runtime.close_cgroup_parent()
    assert list(Path("/sys/fs/cgroup").glob(f"*/flotilla-test-{unique}")) == []
    assert mounts_containing(str(tmp_path / "root")) == []


def service_for(rt: Runtime, tmp_path: Path) -> ImageService:
    return ImageService(rt._images, CredentialStore(tmp_path / "docker" / "config.json"), users=rt._image_users)


def run(rt: Runtime, image: str, cmd: list[str] | None = None) -> tuple[str, int]:
    c = rt.create(ContainerSpec(image=image, cmd=cmd))
    rt.start(c.id)
    code = rt.wait(c.id, timeout=60)
    return b"".join(e.data for e in rt.logs(c.id)).decode(), code


def test_built_image_runs_and_prune_collects(tmp_path, rt, busybox_tar, unique) -> None:
    svc = service_for(rt, tmp_path)
    rt.import_image(busybox_tar, "busybox")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "msg.txt").write_text("built by flotilla\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS build\nCOPY msg.txt /msg.txt\nRUN tr a-z A-Z < /msg.txt > /loud.txt\n"
        "FROM busybox\nCOPY --from=build /loud.txt /srv/\nENV WHO=world\nWORKDIR /srv\n"
        'CMD ["sh", "-c", "cat loud.txt; echo hello $WHO from $(pwd)"]\n')
    img = svc.build(ctx, BuildOptions(tags=[f"app-{unique}:1"]))
    out, code = run(rt, f"app-{unique}:1")
    assert (out, code) == ("BUILT BY FLOTILLA\nhello world from /srv\n", 0)
    # In use: rmi refuses; prune keeps it even with all_images.
    with pytest.raises(Conflict):
        rt.remove_image(f"app-{unique}:1")
    busybox_id = rt.image("busybox").id
    assert svc.prune(all_images=True)["deleted"] == ["Untagged: busybox:latest", f"Deleted: {busybox_id}"]
    assert run(rt, f"app-{unique}:1")[1] == 0  # busybox's layer stays: the app image still references it
    for c in rt.list(all=True):
        rt.remove(c.id, force=True)
    result = svc.prune(all_images=True)
    assert f"Deleted: {img.id}" in result["deleted"] and result["space_reclaimed"] > 0
    root = tmp_path / "root"
    assert store_listing(root)["blobs"] == [] and store_listing(root)["layers"] == []
    assert mounts_containing(unique) == []


def test_pulled_and_loaded_images_run_with_shared_layers(tmp_path, rt, busybox_tar) -> None:
    svc = service_for(rt, tmp_path)
    base = rt.import_image(busybox_tar, "busybox")
    (tmp_path / "reg").mkdir()
    with run_registry(tmp_path / "reg") as reg:
        rt.tag_image("busybox", f"{reg.host}/lib/busybox:1")
        svc.push(f"{reg.host}/lib/busybox:1")
        skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{reg.host}/lib/busybox:1",
               f"docker://{reg.host}/lib/gz:1", "--dest-compress")
        pulled = svc.pull(f"{reg.host}/lib/gz:1")
    assert pulled.id == base.id  # same config, recompressed layers: the same image
    out, code = run(rt, f"{reg.host}/lib/gz:1", ["sh", "-c", "echo pulled ok"])
    assert (out, code) == ("pulled ok\n", 0)
    buf = io.BytesIO()
    svc.save([f"{reg.host}/lib/gz:1"], buf)
    rt.remove_image(f"{reg.host}/lib/gz:1")
    loaded = svc.load(io.BytesIO(buf.getvalue()))
    assert loaded[0].id == base.id
    out, code = run(rt, loaded[0].repo_tags[0], ["sh", "-c", "echo loaded ok"])
    assert (out, code) == ("loaded ok\n", 0)
    layers = os.listdir(tmp_path / "root" / "layers")
    assert len(layers) == 1  # one chain id, shared by every image and container
