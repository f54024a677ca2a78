"""Pull, push, login against Debian's docker-registry on loopback, cross-checked with skopeo.

Every failure case asserts the store is exactly as before (blobs, layers, images.json).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from images_support import (FaultProxy, registry_blob_path, run_registry, skopeo, store_listing, tar_bytes,
                            write_index_layout, write_oci_layout)
from flotilla.runtime.errors import InvalidArgument, NotFound
from flotilla.runtime.images import ImageStore
from flotilla.runtime.imaging.auth import CredentialStore
from flotilla.runtime.imaging.errors import RegistryError, Unauthorized
from flotilla.runtime.imaging.registry import RegistryClient
from flotilla.runtime.imaging.service import ImageService

pytestmark = pytest.mark.root


@pytest.fixture
def registry(tmp_path):
    with run_registry(tmp_path) as reg:
        yield reg


@pytest.fixture
def service(tmp_path):
    return ImageService(ImageStore(tmp_path / "root"), CredentialStore(tmp_path / "docker" / "config.json"))


def seed(tmp: Path, host: str, repo: str, layers: list[bytes], compress: str = "gzip", name: str = "oci") -> dict:
    """Put an image into the registry with skopeo (the peer), from a generated OCI layout."""
    info = write_oci_layout(tmp / name, layers, compress=compress)
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp / name}:latest", f"docker://{host}/{repo}")
    return info


LAYERS = [tar_bytes({"etc": None, "etc/os-release": b"ID=flotilla\n"}), tar_bytes({"app": None, "app/run": b"#!/bin/sh\n" * 100}),
          tar_bytes({"app/data": os.urandom(200_000)})]


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_pull_image_pushed_by_skopeo(tmp_path, registry, service, compress) -> None:
    info = seed(tmp_path, registry.host, "team/app:1", LAYERS, compress)
    events = []
    image = service.pull(f"{registry.host}/team/app:1", progress=events.append)
    assert image.id == info["config_digest"] and image.layers == info["diff_ids"]
    assert image.repo_tags == [f"{registry.host}/team/app:1"]
    assert image.digest == info["manifest_digest"]
    remote = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/team/app:1"))
    assert service.inspect(image.id)["RepoDigests"] == [f"{registry.host}/team/app@{remote['Digest']}"]
    lower = service.images.lower_dirs(image.id)
    assert (Path(lower[-1]) / "etc/os-release").read_bytes() == b"ID=flotilla\n"
    assert {e.status for e in events} >= {"Downloading", "Pull complete", "Extracting"}
    assert any(e.status == "Downloading" and e.current == e.total > 0 for e in events)
    # Pull again by digest: nothing is downloaded, the layers are shared.
    again = []
    same = service.pull(f"{registry.host}/team/app@{info['manifest_digest']}", progress=again.append)
    assert same.id == image.id and service.images.lower_dirs(same.id) == lower
    assert [e.status for e in again if e.id] == ["Waiting"] * 3 + ["Already exists"] * 3
    assert events[-1].status == f"Status: Downloaded newer image for {registry.host}/team/app:1"
    up_to_date = []
    service.pull(f"{registry.host}/team/app:1", progress=up_to_date.append)
    assert up_to_date[-1].status == f"Status: Image is up to date for {registry.host}/team/app:1"


def test_pull_platform_from_index(tmp_path, registry, service) -> None:
    write_index_layout(tmp_path / "multi", [([LAYERS[0]], "amd64"), ([LAYERS[1]], "arm64")])
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{tmp_path / 'multi'}:latest", f"docker://{registry.host}/multi:1")
    arm = service.pull(f"{registry.host}/multi:1", platform="linux/arm64")
    assert service.images.oci_config(arm.id)["architecture"] == "arm64"
    amd = service.pull(f"{registry.host}/multi:1", platform="linux/amd64")
    assert service.images.oci_config(amd.id)["architecture"] == "amd64" and amd.id != arm.id
    before = store_listing(tmp_path / "root")
    with pytest.raises(NotFound, match="linux/s390x"):
        service.pull(f"{registry.host}/multi:1", platform="linux/s390x")
    assert store_listing(tmp_path / "root") == before


def test_push_read_back_by_skopeo_and_mount(tmp_path, registry, service, busybox_tar) -> None:
    img = service.images.import_image(busybox_tar, "busybox:latest")
    service.images.tag(img.id, f"{registry.host}/base/busybox:1")
    events = []
    digest = service.push(f"{registry.host}/base/busybox:1", progress=events.append)
    assert any(e.status == "Pushed" for e in events)
    remote = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/base/busybox:1"))
    assert remote["Digest"] == digest == img.digest
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", f"docker://{registry.host}/base/busybox:1", f"oci:{tmp_path / 'out'}:x")
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    out_cfg = json.loads((tmp_path / "out" / "blobs" / "sha256" / json.loads(
        (tmp_path / "out" / "blobs" / "sha256" / digest[7:]).read_text())["config"]["digest"][7:]).read_text())
    assert out_cfg["rootfs"]["diff_ids"] == img.layers
    # Same repo again: every blob exists. Another repo: blobs are mounted, not uploaded.
    again = []
    service.push(f"{registry.host}/base/busybox:1", progress=again.append)
    assert {e.status for e in again if e.id} <= {"Preparing", "Layer already exists"}
    service.images.tag(img.id, f"{registry.host}/other/copy:2")
    mounted = []
    service.push(f"{registry.host}/other/copy:2", progress=mounted.append)
    assert any(e.status == "Mounted from base/busybox" for e in mounted)


def test_resumable_chunked_upload_and_retries(tmp_path, registry, service) -> None:
    proxy = FaultProxy(registry.host)
    try:
        data = os.urandom(300_000)
        blob = service.images.content.write(data)
        client = RegistryClient(proxy.host, insecure=True)
        # The third PATCH fails twice; the client asks for the offset and resumes there.
        patches = iter(range(100))
        proxy.rule = lambda method, path: method == "PATCH" and next(patches) >= 2
        proxy.failures = 2

        def open_at(offset: int):
            f = open(service.images.content.path(blob), "rb")
            f.seek(offset)
            return f

        client.upload_blob("chunked/x", blob, len(data), open_at, chunk=64 * 1024)
        client.close()
        assert sum(1 for m, _ in proxy.seen if m == "PATCH") >= 7
        assert registry_blob_path(registry.storage, blob).read_bytes() == data
        # Transient 500s on blob downloads are retried; the pull succeeds.
        seed(tmp_path, registry.host, "retry/x:1", LAYERS[:1])
        proxy.rule = lambda method, path: "/blobs/" in path and method == "GET"
        proxy.failures = 2
        image = service.pull(f"{proxy.host}/retry/x:1")
        assert image.layers == [write_oci_layout(tmp_path / "again", LAYERS[:1])["diff_ids"][0]]
    finally:
        proxy.close()


def test_basic_auth_login_pull_push_logout(tmp_path, service) -> None:
    (tmp_path / "authreg").mkdir()
    with run_registry(tmp_path / "authreg", ("alice", "wonderland")) as reg:
        before = store_listing(tmp_path / "root")
        with pytest.raises(Unauthorized):
            service.pull(f"{reg.host}/x:1")
        assert store_listing(tmp_path / "root") == before
        with pytest.raises(Unauthorized):
            service.login(reg.host, "alice", "wrong")
        assert not (tmp_path / "docker" / "config.json").exists()
        assert service.login(reg.host, "alice", "wonderland") == "Login Succeeded"
        assert reg.host in json.loads((tmp_path / "docker" / "config.json").read_text())["auths"]
        write_oci_layout(tmp_path / "img", LAYERS[:2])
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds=alice:wonderland", f"oci:{tmp_path / 'img'}:latest", f"docker://{reg.host}/x:1")
        image = service.pull(f"{reg.host}/x:1")
        service.images.tag(image.id, f"{reg.host}/y:2")
        digest = service.push(f"{reg.host}/y:2")
        remote = json.loads(skopeo("inspect", "--tls-verify=false", "--creds=alice:wonderland", f"docker://{reg.host}/y:2"))
        assert remote["Digest"] == digest
        assert service.logout(reg.host) == f"Removing login credentials for {reg.host}"
        assert service.logout(reg.host) == f"Not logged in to {reg.host}"
        with pytest.raises(Unauthorized):
            service.pull(f"{reg.host}/y:2")


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else data + b" ")


def craft(tmp: Path, host: str, repo_tag: str, layers: list[bytes], manifest_edit=None, config_edit=None) -> dict:
    """Upload an image whose manifest or config was edited after the fact (what skopeo would refuse to copy)."""
    import io

    info = write_oci_layout(tmp / "crafted", layers)
    blobs = tmp / "crafted" / "blobs" / "sha256"
    m = json.loads((blobs / info["manifest_digest"][7:]).read_text())
    if config_edit:
        config = json.loads((blobs / m["config"]["digest"][7:]).read_text())
        config_edit(config)
        data = json.dumps(config).encode()
        m["config"]["digest"], m["config"]["size"] = "sha256:" + __import__("hashlib").sha256(data).hexdigest(), len(data)
        (blobs / m["config"]["digest"][7:]).write_bytes(data)
    if manifest_edit:
        manifest_edit(m)
    repo, tag = repo_tag.split(":")
    client = RegistryClient(host, insecure=True)
    for desc in [m["config"], *m["layers"]]:
        data = (blobs / desc["digest"][7:]).read_bytes()
        client.upload_blob(repo, desc["digest"], len(data), lambda off, d=data: io.BytesIO(d[off:]))
    client.put_manifest(repo, tag, json.dumps(m).encode(), m["mediaType"])
    client.close()
    return m


def evil_tar(name: str, then: bytes = b"") -> bytes:
    """A layer whose first entry escapes with `..`, optionally followed by a big file."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        evil = tarfile.TarInfo(f"../../../../tmp/{name}")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
        if then:
            big = tarfile.TarInfo("big.bin")
            big.size = len(then)
            tar.addfile(big, io.BytesIO(then))
    return buf.getvalue()


@pytest.mark.parametrize("case", ["manifest-mismatch", "truncated-blob", "corrupt-blob", "oversized-blob", "diff-id-mismatch",
                                  "escaping-layer", "escaping-layer-mid-download", "unknown-media-type", "server-error",
                                  "unauthorized", "bad-reference", "missing-tag"])
def test_bad_input_leaves_store_unchanged(tmp_path, registry, service, busybox_tar, case, unique) -> None:
    """Each case fails with one line and leaves blobs, layers (no temp dirs either) and images.json as they were."""
    import contextlib

    service.images.import_image(busybox_tar, "busybox:latest")  # the store is not empty: nothing of it may be lost
    info = seed(tmp_path, registry.host, "bad/x:1", LAYERS)
    ref = f"{registry.host}/bad/x:1"
    proxy = None
    cleanup = contextlib.ExitStack()
    escape = Path(f"/tmp/flotilla-escape-{unique}")
    if case == "manifest-mismatch":
        corrupt(registry_blob_path(registry.storage, info["manifest_digest"]), "edit")
        expected = (InvalidArgument, "digest mismatch")
    elif case == "truncated-blob":
        big = write_oci_layout(tmp_path / "oci", LAYERS)["manifest_digest"]
        layer = json.loads((tmp_path / "oci" / "blobs" / "sha256" / big[7:]).read_text())["layers"][2]["digest"]
        corrupt(registry_blob_path(registry.storage, layer), "truncate")
        expected = (InvalidArgument, "truncated")
    elif case == "corrupt-blob":  # same size, different bytes: the registry serves what it stores
        layer = json.loads((tmp_path / "oci" / "blobs" / "sha256" / info["manifest_digest"][7:]).read_text())["layers"][2]["digest"]
        path = registry_blob_path(registry.storage, layer)
        data = bytearray(path.read_bytes())
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))
        expected = (InvalidArgument, layer)
    elif case == "oversized-blob":  # the manifest declares fewer bytes than the registry sends
        craft(tmp_path, registry.host, "bad/x:1", LAYERS, manifest_edit=lambda m: m["layers"][2].update(size=m["layers"][2]["size"] - 100))
        expected = (InvalidArgument, "larger than")
    elif case == "diff-id-mismatch":  # blob digests fine, but the config's diff id is not the layer's content
        craft(tmp_path, registry.host, "bad/x:1", LAYERS, config_edit=lambda c: c["rootfs"]["diff_ids"].__setitem__(1, "sha256:" + "ab" * 32))
        expected = (InvalidArgument, "diff id")
    elif case == "escaping-layer":
        seed(tmp_path, registry.host, "bad/x:1", [LAYERS[0], evil_tar(escape.name)], name="evil")
        expected = (InvalidArgument, "'..'")
    elif case == "escaping-layer-mid-download":  # the unpacker refuses while megabytes are still arriving
        seed(tmp_path, registry.host, "bad/x:1", [LAYERS[0], evil_tar(escape.name, os.urandom(6 << 20))], name="evil")
        expected = (InvalidArgument, "'..'")
    elif case == "unauthorized":
        (tmp_path / "auth").mkdir()
        locked = cleanup.enter_context(run_registry(tmp_path / "auth", htpasswd_user=("alice", "pw")))
        ref = f"{locked.host}/bad/x:1"
        expected = (Unauthorized, "authentication")
    elif case == "unknown-media-type":
        write_oci_layout(tmp_path / "odd", LAYERS[:1])
        blobs = tmp_path / "odd" / "blobs" / "sha256"
        index = json.loads((tmp_path / "odd" / "index.json").read_text())
        m = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
        m["layers"][0]["mediaType"] = "application/x-flotilla-unknown"
        client = RegistryClient(registry.host, insecure=True)
        for layer in [m["config"], *m["layers"]]:
            data = (blobs / layer["digest"][7:]).read_bytes()
            client.upload_blob("bad/x", layer["digest"], len(data), lambda off, d=data: __import__("io").BytesIO(d[off:]))
        client.put_manifest("bad/x", "1", json.dumps(m).encode(), m["mediaType"])
        client.close()
        expected = (InvalidArgument, "unsupported layer media type")
    elif case == "server-error":
        proxy = FaultProxy(registry.host)
        proxy.rule = lambda method, path: "/blobs/" in path
        proxy.failures = -1
        ref = f"{proxy.host}/bad/x:1"
        expected = (RegistryError, "500")
    elif case == "bad-reference":
        ref = f"{registry.host}/Bad/X:1"
        expected = (InvalidArgument, "lowercase")
    else:
        ref = f"{registry.host}/bad/x:nope"
        expected = (NotFound, "manifest unknown")
    before = store_listing(tmp_path / "root")
    try:
        with cleanup, pytest.raises(expected[0]) as e:
            service.pull(ref)
    finally:
        if proxy:
            proxy.close()
    assert expected[1] in str(e.value) and "\n" not in str(e.value)
    assert store_listing(tmp_path / "root") == before
    assert service.images.leased == {}
    assert not escape.exists()


def test_bearer_token_auth(tmp_path, service) -> None:
    from images_support import run_token_registry

    (tmp_path / "tokreg").mkdir()
    with run_token_registry(tmp_path / "tokreg", "alice", "token-pass") as (reg, tokens):
        write_oci_layout(tmp_path / "img", LAYERS[:2])
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds=alice:token-pass", f"oci:{tmp_path / 'img'}:latest",
               f"docker://{reg.host}/secure/app:1")
        before = store_listing(tmp_path / "root")
        with pytest.raises(Unauthorized):
            service.pull(f"{reg.host}/secure/app:1")  # anonymous token grants nothing
        assert store_listing(tmp_path / "root") == before
        with pytest.raises(Unauthorized):
            service.login(reg.host, "alice", "wrong")
        service.login(reg.host, "alice", "token-pass")
        image = service.pull(f"{reg.host}/secure/app:1")
        service.images.tag(image.id, f"{reg.host}/secure/copy:2")
        events = []
        digest = service.push(f"{reg.host}/secure/copy:2", progress=events.append)
        assert any(e.status == "Mounted from secure/app" for e in events)  # a token with both repos' scopes
        remote = json.loads(skopeo("inspect", "--tls-verify=false", "--creds=alice:token-pass", f"docker://{reg.host}/secure/copy:2"))
        assert remote["Digest"] == digest
        assert any("scope=repository%3Asecure%2Fcopy%3Apull%2Cpush" in r for r in tokens.requests)


def test_push_corrects_layer_media_types_of_committed_images(tmp_path, registry, service) -> None:
    """ImageStore.add_image (import/commit) labels layers as plain tars; pulled ones are gzip."""
    seed(tmp_path, registry.host, "base/gz:1", LAYERS[:2])
    pulled = service.pull(f"{registry.host}/base/gz:1")
    blobs = [d["digest"] for d in json.loads(service.images.content.read(pulled.digest))["layers"]]
    relabeled = service.images.add_image(config={"Env": ["PATH=/bin"]}, diff_ids=pulled.layers, layer_blobs=blobs,
                                         tag=f"{registry.host}/derived/x:1", history=[], created=0.0)
    digest = service.push(f"{registry.host}/derived/x:1")
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/derived/x:1"))
    assert [layer["mediaType"] for layer in raw["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"] * 2
    other = ImageService(ImageStore(tmp_path / "other"), CredentialStore(tmp_path / "o.json"))
    back = other.pull(f"{registry.host}/derived/x@{digest}")
    assert back.id == relabeled.id and back.layers == pulled.layers


def test_kill_9_during_pull_then_recover(tmp_path, registry, busybox_tar) -> None:
    """A pull killed mid-download leaves only unreferenced files, and recover() removes them."""
    import signal
    import subprocess
    import sys
    import time

    info = seed(tmp_path, registry.host, "slow/x:1", LAYERS)
    manifest = json.loads((tmp_path / "oci" / "blobs" / "sha256" / info["manifest_digest"][7:]).read_text())
    stalled = manifest["layers"][2]["digest"]
    root = tmp_path / "root"
    svc = ImageService(ImageStore(root), CredentialStore(tmp_path / "c.json"))
    svc.images.import_image(busybox_tar, "busybox:latest")
    before = store_listing(root)
    proxy = FaultProxy(registry.host)
    gate = __import__("threading").Event()
    original = proxy.server.RequestHandlerClass._do

    def stall(handler) -> None:  # the third layer blob never comes: the pull hangs in the middle
        if handler.command == "GET" and handler.path.endswith(stalled):
            gate.wait(30)
        original(handler)

    proxy.server.RequestHandlerClass._do = stall
    proxy.server.RequestHandlerClass.do_GET = stall
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
            "from flotilla.runtime.images import ImageStore\n"
            "from flotilla.runtime.imaging.service import ImageService\n"
            f"ImageService(ImageStore(__import__('pathlib').Path({str(root)!r}))).pull({f'{proxy.host}/slow/x:1'!r}, "
            "progress=lambda e: print(e.status, flush=True))\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:
            if line.startswith("Pull complete"):
                break
        time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        gate.set()
        proxy.close()
    assert store_listing(root) != before  # something was left behind by the kill
    svc.recover()
    assert store_listing(root) == before


def test_tls_registry_certs_d_and_insecure_probe(tmp_path, service) -> None:
    from images_support import make_cert

    (tmp_path / "tls").mkdir()
    cert, key = make_cert(tmp_path / "tls")
    with run_registry(tmp_path / "tls", tls=(cert, key)) as reg:
        write_oci_layout(tmp_path / "img", LAYERS[:1])
        skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'img'}:latest", f"docker://{reg.host}/tls/x:1")
        # Loopback counts as insecure: HTTPS without verification is tried first, and answers.
        client = service.client(reg.host)
        assert client.scheme == "https"
        client.close()
        assert service.pull(f"{reg.host}/tls/x:1").layers
        # Verified HTTPS: refused without the CA, accepted with it in certs.d/<host>/.
        certs = tmp_path / "certs.d"
        strict = RegistryClient(reg.host, insecure=False, certs_dir=certs)
        with pytest.raises(RegistryError, match=f"certs.d/{reg.host}/ca.crt"):
            strict.ping()
        (certs / reg.host).mkdir(parents=True)
        (certs / reg.host / "ca.crt").write_bytes(cert.read_bytes())
        trusted = RegistryClient(reg.host, insecure=False, certs_dir=certs)
        trusted.ping()
        assert trusted.blob_exists("tls/x", json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{reg.host}/tls/x:1"))["Layers"][0])
        trusted.close()
    # A plain-HTTP loopback registry is probed and falls back to http.
    (tmp_path / "plain").mkdir()
    with run_registry(tmp_path / "plain") as plain:
        client = service.client(plain.host)
        assert client.scheme == "http"
        client.ping()
        client.close()


def test_gc_during_a_pull_leaves_its_blobs_alone(tmp_path, registry, service) -> None:
    """rmi/prune run gc; what an unfinished pull wrote is leased and survives it."""
    import threading

    info = seed(tmp_path, registry.host, "lease/x:1", LAYERS)
    manifest = json.loads((tmp_path / "oci" / "blobs" / "sha256" / info["manifest_digest"][7:]).read_text())
    stalled = manifest["layers"][2]["digest"]
    proxy = FaultProxy(registry.host)
    gate, two_done = threading.Event(), threading.Event()
    original = proxy.server.RequestHandlerClass._do

    def stall(handler) -> None:
        if handler.command == "GET" and handler.path.endswith(stalled):
            gate.wait(30)
        original(handler)

    proxy.server.RequestHandlerClass.do_GET = stall
    done: list[str] = []
    result: list = []

    def on_event(e) -> None:
        if e.status == "Pull complete":
            done.append(e.id)
            if len(done) == 2:
                two_done.set()

    worker = threading.Thread(target=lambda: result.append(service.pull(f"{proxy.host}/lease/x:1", progress=on_event)))
    worker.start()
    try:
        assert two_done.wait(30)
        service.prune(all_images=True)  # gc with two layers written but no image published yet
        # the two finished layers survive; the stalled one is still a temp dir (it unpacks while it downloads)
        assert len([n for n in os.listdir(tmp_path / "root" / "layers") if not n.startswith(".tmp-")]) == 2
    finally:
        gate.set()
        worker.join(30)
        proxy.close()
    image = result[0]
    assert [Path(d).is_dir() for d in service.images.lower_dirs(image.id)] == [True] * 3
    assert service.images.leased == {}
