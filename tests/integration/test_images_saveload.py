"""`docker save` / `docker load` round trips, archives read by skopeo, OCI layouts and legacy archives."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from images_support import run_registry, skopeo, store_listing, tar_bytes, write_oci_layout
from flotilla.runtime.errors import InvalidArgument
from flotilla.runtime.images import ImageStore
from flotilla.runtime.imaging.auth import CredentialStore
from flotilla.runtime.imaging.service import ImageService

pytestmark = pytest.mark.root


def new_service(root: Path) -> ImageService:
    return ImageService(ImageStore(root), CredentialStore(root.parent / f"{root.name}-docker" / "config.json"))


@pytest.fixture
def service(tmp_path, busybox_tar):
    svc = new_service(tmp_path / "root")
    svc.images.import_image(busybox_tar, "busybox:latest")
    return svc


def test_save_load_round_trip_and_skopeo_reads_it(tmp_path, service) -> None:
    img = service.images.image("busybox")
    service.images.tag(img.id, "example.com/team/bb:2")
    archive = tmp_path / "saved.tar"
    with open(archive, "wb") as f:
        service.save(["busybox", "example.com/team/bb:2"], f)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"manifest.json", "index.json", "oci-layout", "repositories", f"blobs/sha256/{img.id[7:]}"} <= names
    docker_view = json.loads(skopeo("inspect", f"docker-archive:{archive}:busybox:latest"))
    assert docker_view["Layers"] == [json.loads((tmp_path / "root" / "blobs" / "sha256" / img.digest[7:]).read_text())["layers"][0]["digest"]]
    oci_view = json.loads(skopeo("inspect", "--raw", f"oci-archive:{archive}:latest"))
    assert oci_view["config"]["digest"] == img.id
    other = new_service(tmp_path / "other")
    events = []
    with open(archive, "rb") as f:
        loaded = other.load(f, progress=events.append)
    assert [i.id for i in loaded] == [img.id]
    assert sorted(other.images.image(img.id).repo_tags) == ["busybox:latest", "example.com/team/bb:2"]
    assert other.images.image("busybox").digest == img.digest
    assert Path(other.images.lower_dirs(img.id)[0], "bin/busybox").exists()
    assert any(e.status == "Loaded image: busybox:latest" for e in events)
    # gzip-compressed archives load too (docker load accepts them).
    third = new_service(tmp_path / "third")
    assert third.load(io.BytesIO(gzip.compress(archive.read_bytes())))[0].id == img.id


def test_load_oci_archive_written_by_skopeo(tmp_path) -> None:
    info = write_oci_layout(tmp_path / "oci", [tar_bytes({"a": b"1"}), tar_bytes({"b": b"2"})], compress="zstd")
    with run_registry(tmp_path) as reg:
        skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'oci'}:latest", f"docker://{reg.host}/x:1")
        skopeo("copy", "--src-tls-verify=false", "--preserve-digests", f"docker://{reg.host}/x:1",
               f"oci-archive:{tmp_path / 'x.tar'}:{reg.host}/x:1")
    svc = new_service(tmp_path / "root")
    with open(tmp_path / "x.tar", "rb") as f:
        loaded = svc.load(f)
    assert loaded[0].id == info["config_digest"] and loaded[0].layers == info["diff_ids"]
    assert loaded[0].repo_tags == [f"{reg.host}/x:1"]


def test_load_legacy_docker_archive(tmp_path) -> None:
    layer = tar_bytes({"hello.txt": b"legacy"})
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in ((f"{'ab' * 32}/layer.tar", layer), (cfg_name, config),
                           ("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": ["legacy:1"], "Layers": [f"{'ab' * 32}/layer.tar"]}]).encode()),
                           ("repositories", json.dumps({"legacy": {"1": "ab" * 32}}).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    svc = new_service(tmp_path / "root")
    img = svc.load(io.BytesIO(buf.getvalue()))[0]
    assert img.repo_tags == ["legacy:1"] and img.layers == [diff_id]
    assert Path(svc.images.lower_dirs(img.id)[0], "hello.txt").read_text() == "legacy"


def _retar(src: Path, edit) -> bytes:
    """Copy an archive, letting `edit(name, data)` change (return bytes) or drop (return None) entries."""
    out = io.BytesIO()
    with tarfile.open(src) as tin, tarfile.open(fileobj=out, mode="w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isreg() else None
            if data is not None:
                data = edit(m.name, data)
                if data is None:
                    continue
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


@pytest.mark.parametrize("case,fragment", [
    ("missing-blob", "missing"),
    ("changed-layer", "has"),
    ("no-index", "neither manifest.json"),
    ("escape", "'..'"),
])
def test_bad_archives_leave_store_unchanged(tmp_path, service, case, fragment) -> None:
    img = service.images.image("busybox")
    archive = tmp_path / "saved.tar"
    with open(archive, "wb") as f:
        service.save(["busybox"], f)
    layer_hex = img.layers[0][7:]
    if case == "missing-blob":
        data = _retar(archive, lambda n, d: None if n.endswith(layer_hex) else d)
    elif case == "changed-layer":
        data = _retar(archive, lambda n, d: d + b"\0" * 512 if n.endswith(layer_hex) else d)
    elif case == "no-index":
        data = _retar(archive, lambda n, d: None if n in ("index.json", "manifest.json") else d)
    else:
        buf = io.BytesIO(_retar(archive, lambda n, d: d))
        evil = io.BytesIO()
        with tarfile.open(fileobj=evil, mode="w") as tar:
            info = tarfile.TarInfo("../../escaped")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        data = evil.getvalue() + buf.getvalue()
    target = new_service(tmp_path / "target")
    target.images.import_image(io.BytesIO(tar_bytes({"keep": b"1"})), "keep:1")
    before = store_listing(tmp_path / "target")
    with pytest.raises(InvalidArgument) as e:
        target.load(io.BytesIO(data))
    assert fragment in str(e.value)
    assert store_listing(tmp_path / "target") == before
    assert not (tmp_path / "escaped").exists()
