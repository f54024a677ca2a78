"""`docker pull`: manifest (and index) by tag or digest, config, layers in parallel, register.

Order of trust: the manifest's bytes are checked against the digest we asked for (or the
registry's `Docker-Content-Digest` for a tag), the config and every layer blob against the
manifest's descriptors (digest and size, while streaming), every unpacked layer against the
config's diff ids. Only then is the image published; on any failure nothing new stays.
"""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

from ..errors import InvalidArgument
from ..images import ImageInfo, ImageStore, chain_ids
from ..store import digest_bytes
from .errors import RegistryError
from .manifest import Descriptor, Index, Manifest, check_config, parse_manifest, select_platform
from .progress import ByteCounter, Progress, ProgressEvent, ignore, short_id
from .reference import ImageRef
from .registry import RegistryClient, is_connection_error
from .streams import CheckedReader
from .transaction import StoreTransaction
from .unpack import unpack_layer

MAX_CONCURRENT = 3  # Docker's default max-concurrent-downloads


def fetch_manifest(client: RegistryClient, repo: str, reference: str, expected: str = "") -> tuple[bytes, Manifest | Index, str]:
    """Manifest bytes, parsed, and their digest, verified against `expected` when known."""
    body, media_type, header_digest = client.get_manifest(repo, reference)
    digest = digest_bytes(body)
    want = expected or (reference if reference.startswith("sha256:") else header_digest)
    if want and digest != want:
        raise InvalidArgument(f"manifest digest mismatch for {repo}:{reference}: expected {want}, content has {digest}")
    return body, parse_manifest(body, media_type), digest


def download_blob(images: ImageStore, client: RegistryClient, repo: str, desc: Descriptor,
                  progress: Progress) -> None:
    """Stream a blob into the content store, verified; resume with Range after a dropped connection."""
    counter = ByteCounter(progress, short_id(desc.digest), "Downloading", desc.size)
    attempts = 0

    class Resuming:
        """File-like over the HTTP body that reconnects at the current offset on errors."""

        def __init__(self) -> None:
            self.offset = 0
            self.resp = client.open_blob(repo, desc.digest)

        def read(self, n: int = -1) -> bytes:
            nonlocal attempts
            while True:
                try:
                    data = self.resp.raw.read(n)
                except Exception as e:  # noqa: BLE001 - only connection errors are retried below
                    if not is_connection_error(e) or attempts >= 3:
                        raise RegistryError(f"download of {desc.digest} from {client.domain} failed: {e}") from None
                    attempts += 1
                    self.resp = client.open_blob(repo, desc.digest, self.offset)
                    continue
                self.offset += len(data)
                return data

    src = Resuming()
    # The size is checked here while streaming; the digest once, by the content store's writer.
    checked = CheckedReader(src, f"blob {desc.digest}", expected_size=desc.size, on_bytes=counter)  # type: ignore[arg-type]
    images.content.write_stream(io.BufferedReader(checked, 1 << 20), expected=desc.digest)  # type: ignore[arg-type]


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
        def fetch_layer(i: int) -> None:
            desc, ident = manifest.layers[i], short_id(manifest.layers[i].digest)
            if (images.layers_dir / chains[i][7:] / "diff").is_dir() and images.content.has(desc.digest):
                progress(ProgressEvent(ident, "Already exists"))
                return
            if not images.content.has(desc.digest):
                tx.blob(desc.digest)
                download_blob(images, client, repo, desc, progress)
                progress(ProgressEvent(ident, "Download complete", desc.size, desc.size))
            tx.layer(chains[i])
            extracting = ByteCounter(progress, ident, "Extracting", 0)
            unpack_layer(images, chains[i], diff_ids[i], desc.digest, on_bytes=extracting)
            extracting.finish()
            progress(ProgressEvent(ident, "Pull complete"))

        for i, layer in enumerate(manifest.layers):
            progress(ProgressEvent(short_id(layer.digest), "Waiting", 0, layer.size))
        with ThreadPoolExecutor(max_workers=max(1, max_concurrent)) as pool:
            for fut in [pool.submit(fetch_layer, i) for i in range(len(manifest.layers))]:
                fut.result()
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

