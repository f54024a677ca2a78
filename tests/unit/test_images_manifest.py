"""Manifests, indexes and platform selection: what is accepted and what is refused."""
from __future__ import annotations

import json

import pytest

from flotilla.runtime.errors import InvalidArgument, NotFound
from flotilla.runtime.imaging import manifest as mf

D = ["sha256:" + c * 64 for c in "0123456789"]


def image_manifest(media_type: str = mf.OCI_MANIFEST, layer_type: str = mf.OCI_LAYER_GZIP, in_body: bool = True) -> bytes:
    obj = {"schemaVersion": 2, "config": {"mediaType": mf.OCI_CONFIG, "digest": D[0], "size": 10},
           "layers": [{"mediaType": layer_type, "digest": D[1], "size": 20}]}
    if in_body:
        obj["mediaType"] = media_type
    return json.dumps(obj).encode()


def index(*platforms: dict) -> mf.Index:
    entries = [{"mediaType": mf.OCI_MANIFEST, "digest": D[i + 2], "size": 5, "platform": p} for i, p in enumerate(platforms)]
    parsed = mf.parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": entries}).encode())
    assert isinstance(parsed, mf.Index)
    return parsed


def test_oci_and_docker_manifests() -> None:
    m = mf.parse_manifest(image_manifest())
    assert isinstance(m, mf.Manifest) and m.config.digest == D[0] and m.layers[0].size == 20
    d = mf.parse_manifest(image_manifest(mf.DOCKER_MANIFEST, mf.DOCKER_LAYER_GZIP))
    assert isinstance(d, mf.Manifest) and d.media_type == mf.DOCKER_MANIFEST
    # No mediaType in the body: the Content-Type header decides.
    h = mf.parse_manifest(image_manifest(in_body=False), mf.DOCKER_MANIFEST)
    assert isinstance(h, mf.Manifest) and h.media_type == mf.DOCKER_MANIFEST


def test_docker_manifest_list() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": mf.DOCKER_LIST, "manifests": [
        {"mediaType": mf.DOCKER_MANIFEST, "digest": D[3], "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}]})
    parsed = mf.parse_manifest(body.encode())
    assert isinstance(parsed, mf.Index)
    assert mf.select_platform(parsed, "linux/amd64").digest == D[3]


@pytest.mark.parametrize("body,fragment", [
    (b"not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"schemaVersion": 1}).encode(), "schema 1"),
    (json.dumps({"schemaVersion": 2, "mediaType": "application/x-weird"}).encode(), "unsupported manifest media type"),
    (image_manifest(layer_type="application/x-tar-lz4"), "unsupported layer media type"),
    (json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": D[0], "size": 1}, "layers": []}).encode(), "not a container image"),
    (json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": {"mediaType": mf.OCI_CONFIG, "digest": "sha512:ab", "size": 1}, "layers": []}).encode(), "only sha256"),
    (json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": {"mediaType": mf.OCI_CONFIG, "digest": D[0], "size": -1}, "layers": []}).encode(), "non-negative"),
])
def test_bad_manifests(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        mf.parse_manifest(body)
    assert fragment in str(e.value)


def test_platform_selection() -> None:
    idx = index({"os": "linux", "architecture": "amd64"}, {"os": "linux", "architecture": "arm64", "variant": "v8"},
                {"os": "linux", "architecture": "arm", "variant": "v7"}, {"os": "windows", "architecture": "amd64"})
    assert mf.select_platform(idx, "linux/amd64").digest == D[2]
    assert mf.select_platform(idx, "linux/arm64").digest == D[3]
    assert mf.select_platform(idx, "linux/arm/v7").digest == D[4]
    assert mf.select_platform(idx).digest == {"linux/amd64": D[2], "linux/arm64": D[3]}[mf.host_platform()]
    with pytest.raises(NotFound) as e:
        mf.select_platform(idx, "linux/s390x")
    assert "linux/amd64" in str(e.value) and "linux/arm64/v8" in str(e.value)
    with pytest.raises(InvalidArgument):
        mf.select_platform(idx, "amd64")


def test_config_checks() -> None:
    good = {"os": "linux", "rootfs": {"type": "layers", "diff_ids": [D[1]]}}
    assert mf.check_config(json.dumps(good).encode())["rootfs"]["diff_ids"] == [D[1]]
    with pytest.raises(InvalidArgument, match="diff_ids"):
        mf.check_config(json.dumps({"os": "linux"}).encode())
    with pytest.raises(InvalidArgument, match="windows"):
        mf.check_config(json.dumps({**good, "os": "windows"}).encode())
