"""`docker pull`: manifest (and index) by tag or digest, config, layers in parallel, register.

Order of trust: the manifest's bytes are checked against the digest we asked for (or the
registry's `Docker-Content-Digest` for a tag), the config and every layer blob against the
manifest's descriptors (digest and size, while streaming), every unpacked layer against the
config's diff ids. Only then is the image published; on any failure nothing new stays.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from ..errors import InvalidArgument
from ..fsutil import fsync_dir
from ..images import ImageInfo, ImageStore, chain_ids
from ..store import digest_bytes
from .blobwriter import BlobWriter
from .errors import RegistryError
from .manifest import Descriptor, Index, Manifest, check_config, parse_manifest, select_platform
from .progress import ByteCounter, Progress, ProgressEvent, ignore, short_id
from .reference import ImageRef
from .registry import RegistryClient, is_connection_error
from .streams import CHUNK
from .streaming import ThreadedConsumer
from .transaction import StoreTransaction
from .unpack import unpack_chunks, unpack_layer

MAX_CONCURRENT = 3  # Docker's default max-concurrent-downloads


def fetch_manifest(client: RegistryClient, repo: str, reference: str, expected: str = "") -> tuple[bytes, Manifest | Index, str]:
    """Manifest bytes, parsed, and their digest, verified against `expected` when known."""
    body, media_type, header_digest = client.get_manifest(repo, reference)
    digest = digest_bytes(body)
    want = expected or (reference if reference.startswith("sha256:") else header_digest)
    if want and digest != want:
        raise InvalidArgument(f"manifest digest mismatch for {repo}:{reference}: expected {want}, content has {digest}")
    return body, parse_manifest(body, media_type), digest


def blob_chunks(client: RegistryClient, repo: str, digest: str) -> Iterator[memoryview]:
    """The blob's bytes as 1 MiB chunks straight from the socket (each a fresh buffer the
    caller may hand to another thread); a dropped connection resumes with `Range` where it
    stopped (at most 3 times)."""
    resp = client.open_blob(repo, digest)
    offset = attempts = 0
    while True:
        buf = bytearray(CHUNK)
        try:
            n = resp.raw.readinto(buf)
        except Exception as e:  # noqa: BLE001 - only connection errors are retried below
            if not is_connection_error(e) or attempts >= 3:
                raise RegistryError(f"download of {digest} from {client.domain} failed: {e}") from None
            attempts += 1
            resp = client.open_blob(repo, digest, offset)
            continue
        if not n:
            return
        offset += n
        yield memoryview(buf)[:n]


def download_blob(images: ImageStore, client: RegistryClient, repo: str, desc: Descriptor, progress: Progress,
                  consumer: ThreadedConsumer[object] | None = None) -> None:
    """Stream a blob into the content store, hashed once and size-checked while it arrives.

    With `consumer`, every chunk also goes to it (the layer's unpacker on its own thread); it
    is told the stream is complete only after the blob was verified and stored.
    """
    counter = ByteCounter(progress, short_id(desc.digest), "Downloading", desc.size)
    writer = BlobWriter(images.content, desc.digest, desc.size, f"blob {desc.digest}")
    try:
        for chunk in blob_chunks(client, repo, desc.digest):
            if consumer:
                consumer.feed(chunk)  # first, so unpacking this chunk overlaps hashing and writing it
            writer.write(chunk)
            counter(len(chunk))
        writer.commit()
    except BaseException:
        writer.discard()
        if consumer:
            consumer.cancel()
        raise


def fetch_layer(images: ImageStore, client: RegistryClient, repo: str, desc: Descriptor, chain: str, diff_id: str,
                tx: StoreTransaction, progress: Progress) -> None:
    """Make sure the layer's blob and its unpacked dir are in the store, downloading and
    unpacking at the same time when both are missing."""
    ident = short_id(desc.digest)
    have_layer = (images.layers_dir / chain[7:] / "diff").is_dir()
    have_blob = images.content.has(desc.digest)
    if have_layer and have_blob:
        progress(ProgressEvent(ident, "Already exists"))
        return
    if not have_layer:
        tx.layer(chain)
    unpacker: ThreadedConsumer[tuple[Path, bool]] | None = None
    # Silent while the layer downloads (its events would interleave with the download's), live
    # for the part of the unpack that trails behind.
    extracted = ByteCounter(ignore, ident, "Extracting", 0)
    if not have_blob:
        tx.blob(desc.digest)
        if not have_layer:
            unpacker = ThreadedConsumer(
                lambda chunks: unpack_chunks(images, chain, diff_id, chunks, desc.digest, on_bytes=extracted),
                name=f"unpack-{ident}")
        try:
            download_blob(images, client, repo, desc, progress, unpacker)  # type: ignore[arg-type]
            progress(ProgressEvent(ident, "Download complete", desc.size, desc.size))
        except BaseException:
            if unpacker:
                unpacker.cancel()  # whatever failed, its thread must not wait for chunks forever
            raise
    extracted.sink = progress
    if unpacker:
        unpacker.finish()
    elif not have_layer:
        unpack_layer(images, chain, diff_id, desc.digest, on_bytes=extracted)
    if not have_layer:
        extracted.finish()
    progress(ProgressEvent(ident, "Pull complete"))


def pull(images: ImageStore, client: RegistryClient, ref: ImageRef, platform: str = "",
         progress: Progress = ignore, max_concurrent: int = MAX_CONCURRENT) -> ImageInfo:
    """Pull `ref` from `client`'s registry into the store and tag it (familiar form)."""
    repo = ref.path
    body, parsed, digest = fetch_manifest(client, repo, ref.wire_reference)
    repo_digest = digest
    if isinstance(parsed, Index):
        chosen = select_platform(parsed, platform)
        body, parsed, digest = fetch_manifest(client, repo, chosen.digest, expected=chosen.digest)
        if isinstance(parsed, Index):
            raise InvalidArgument(f"{ref}: the index entry {chosen.digest} is itself an index; nested indexes are not supported")
    manifest: Manifest = parsed
    config_body = client.request("GET", f"/v2/{repo}/blobs/{manifest.config.digest}", scope=f"repository:{repo}:pull").read()
    if digest_bytes(config_body) != manifest.config.digest or len(config_body) != manifest.config.size:
        raise InvalidArgument(f"config blob {manifest.config.digest} of {ref} failed verification (digest or size mismatch)")
    config = check_config(config_body)
    diff_ids: list[str] = config["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest.layers):
        raise InvalidArgument(f"{ref}: the manifest has {len(manifest.layers)} layers but the config lists {len(diff_ids)} diff ids")
    progress(ProgressEvent("", f"Pulling from {ref.familiar_name}"))
    chains = chain_ids(diff_ids)
    with StoreTransaction(images) as tx:
        for i, layer in enumerate(manifest.layers):
            progress(ProgressEvent(short_id(layer.digest), "Waiting", 0, layer.size))
        with ThreadPoolExecutor(max_workers=max(1, max_concurrent)) as pool:
            for fut in [pool.submit(fetch_layer, images, client, repo, manifest.layers[i], chains[i], diff_ids[i], tx, progress)
                        for i in range(len(manifest.layers))]:
                fut.result()
        fsync_dir(images.content.dir)  # the layer blobs' names are durable before an image refers to them
        for data, d in ((config_body, manifest.config.digest), (body, digest)):
            tx.blob(d)
            images.content.write(data, expected=d)
        tags = [ref.familiar()]
        with images.lock:
            previous = images._meta()["tags"].get(ref.familiar())
            info = images.register_image(digest, tags, repo_digests=[f"{ref.familiar_name}@{repo_digest}"])
    progress(ProgressEvent("", f"Digest: {repo_digest}"))
    fresh = "Image is up to date for" if previous == info.id else "Downloaded newer image for"
    progress(ProgressEvent("", f"Status: {fresh} {ref.familiar()}"))
    return info

