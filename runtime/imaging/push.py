"""`docker push`: layers and config (skipping what the registry has), then the manifest.

For each blob: HEAD in the target repository ("Layer already exists"); else a cross-repository
mount from a repository of the same registry this store knows holds it (from the images' repo
digests, "Mounted from ..."); else a chunked, resumable upload. The manifest goes last, so a
registry never holds a manifest whose blobs are missing.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from ..images import ImageStore
from ..store import digest_bytes
from . import manifest as mf
from .manifest import Descriptor, Manifest, parse_manifest
from .progress import ByteCounter, Progress, ProgressEvent, ignore, short_id
from .reference import ImageRef, parse
from .registry import RegistryClient
from .streams import GZIP_MAGIC, ZSTD_MAGIC

MAX_CONCURRENT = 5  # Docker's default max-concurrent-uploads


def mount_sources(images: ImageStore, domain: str, digest: str, exclude: str) -> list[str]:
    """Repositories on `domain` that hold `digest`, known from repo digests of stored images."""
    meta = images._meta()
    sources: list[str] = []
    for entry in meta["images"].values():
        manifest = json.loads(images.content.read(entry["manifest"]))
        if digest not in {d["digest"] for d in manifest["layers"]} | {manifest["config"]["digest"]}:
            continue
        for rd in entry.get("repo_digests", []):
            r = parse(rd.partition("@")[0], default_tag=False)
            if r.domain == domain and r.path != exclude and r.path not in sources:
                sources.append(r.path)
    return sources


def truthful_manifest(images: ImageStore, body: bytes) -> bytes:
    """The manifest with each layer's media type matching its blob's actual compression.

    `ImageStore.add_image` (import, commit) labels every layer as a plain tar; after a commit
    on top of a pulled image, lower layers are really gzip or zstd. A registry client would
    then fail to unpack them, so the push sends corrected media types (a new manifest digest).
    """
    obj = json.loads(body)
    changed = False
    for layer in obj.get("layers", []):
        with images.content.open(layer["digest"]) as f:
            head = f.read(4)
        actual = {"gzip": mf.OCI_LAYER_GZIP, "zstd": mf.OCI_LAYER_ZSTD}.get(
            "gzip" if head.startswith(GZIP_MAGIC) else "zstd" if head.startswith(ZSTD_MAGIC) else "", mf.OCI_LAYER)
        if mf.LAYER_TYPES.get(layer["mediaType"]) != mf.LAYER_TYPES[actual]:
            layer["mediaType"] = actual if obj.get("mediaType") != mf.DOCKER_MANIFEST else \
                {mf.OCI_LAYER: mf.DOCKER_LAYER, mf.OCI_LAYER_GZIP: mf.DOCKER_LAYER_GZIP}.get(actual, actual)
            changed = True
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() if changed else body


def push_blob(images: ImageStore, client: RegistryClient, repo: str, desc: Descriptor, progress: Progress) -> None:
    ident = short_id(desc.digest)
    if client.blob_exists(repo, desc.digest, scope=f"repository:{repo}:pull,push"):
        progress(ProgressEvent(ident, "Layer already exists", desc.size, desc.size))
        return
    for source in mount_sources(images, client.domain, desc.digest, repo):
        if client.mount_blob(repo, desc.digest, source):
            progress(ProgressEvent(ident, f"Mounted from {source}", desc.size, desc.size))
            return
    def open_at(offset: int) -> BinaryIO:
        f = images.content.open(desc.digest)  # NotFound if an rmi removed it meanwhile
        f.seek(offset)
        return f

    counter = ByteCounter(progress, ident, "Pushing", desc.size)
    client.upload_blob(repo, desc.digest, desc.size, open_at, on_bytes=counter)
    progress(ProgressEvent(ident, "Pushed", desc.size, desc.size))


def push(images: ImageStore, client: RegistryClient, ref: ImageRef, progress: Progress = ignore,
         max_concurrent: int = MAX_CONCURRENT) -> str:
    """Push the local image `ref` to its registry under `ref.tag`; returns the manifest digest."""
    with images.lock:
        image_id = images.resolve(ref.familiar())
        manifest_digest = images._meta()["images"][image_id]["manifest"]
        body = images.content.read(manifest_digest)
    body = truthful_manifest(images, body)
    manifest = parse_manifest(body)
    assert isinstance(manifest, Manifest)  # the store only records image manifests
    progress(ProgressEvent("", f"The push refers to repository [{ref.repository}]"))
    blobs = list(manifest.layers) + [manifest.config]
    for d in manifest.layers:
        progress(ProgressEvent(short_id(d.digest), "Preparing", 0, d.size))
    with ThreadPoolExecutor(max_workers=max(1, max_concurrent)) as pool:
        for fut in [pool.submit(push_blob, images, client, ref.path, d, progress) for d in blobs]:
            fut.result()
    digest = client.put_manifest(ref.path, ref.tag or digest_bytes(body), body, manifest.media_type) or digest_bytes(body)
    images.register_image(manifest_digest, [], repo_digests=[f"{ref.familiar_name}@{digest}"])
    progress(ProgressEvent("", f"{ref.tag or 'latest'}: digest: {digest} size: {len(body)}"))
    return digest
