"""`docker save` / `docker load`: the tar format recent Docker writes, and OCI image layouts.

Save writes what Docker 25+ writes: an OCI image layout (`oci-layout`, `index.json`,
`blobs/sha256/...`) plus Docker's `manifest.json` and `repositories`, so both `docker load`
and OCI tools (skopeo `oci-archive:`) read it. Blobs are written as stored — the manifest
digest of a saved image is the one it had in the registry.

Load accepts that format, an OCI layout without Docker's files (tags from the
`io.containerd.image.name` / `org.opencontainers.image.ref.name` annotations), and the older
Docker format (`<id>/layer.tar` paths in manifest.json, no index). The archive is unpacked with
the runtime's safe extractor into a temp dir under `layers/` (swept after a crash), every blob
is verified, and the images are published together or not at all.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from .. import archive
from ..errors import InvalidArgument
from ..fsutil import remove_tree
from ..images import ImageInfo, ImageStore, chain_ids
from ..store import check_digest, digest_bytes
from .manifest import (DOCKER_LAYER, DOCKER_LAYER_GZIP, OCI_CONFIG, OCI_LAYER_ZSTD, OCI_MANIFEST, Descriptor,
                       Index, Manifest, check_config, manifest_json, parse_manifest, select_platform)
from .progress import Progress, ProgressEvent, ignore, short_id
from .reference import parse
from .streams import GZIP_MAGIC, ZSTD_MAGIC
from .transaction import StoreTransaction
from .unpack import unpack_layer

NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"


# -- save -----------------------------------------------------------------------------------
def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, path: Path | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = int(time.time()) if data is not None else 0
    info.mode = 0o644
    if path is not None:
        info.size = path.stat().st_size
        with open(path, "rb") as f:
            tar.addfile(info, f)
    else:
        assert data is not None
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def save(images: ImageStore, refs: list[str], fileobj: BinaryIO) -> None:
    """Write the images named by `refs` (tags or ids) to `fileobj` as a `docker save` tar stream."""
    if not refs:
        raise InvalidArgument("save needs at least one image name or id")
    with images.lock:
        meta = images._meta()
        chosen: dict[str, list[str]] = {}
        for text in refs:
            image_id = images.resolve(text)
            tags = chosen.setdefault(image_id, [])
            tag = images._as_tag(text.strip())
            if tag in meta["tags"] and tag not in tags:
                tags.append(tag)
        entries = [(image_id, meta["images"][image_id]["manifest"], tags) for image_id, tags in chosen.items()]
        blobs: list[str] = []
        docker_manifest, index, repositories = [], [], {}
        for image_id, mdigest, tags in entries:
            body = images.content.read(mdigest)
            m = parse_manifest(body)
            assert isinstance(m, Manifest)
            for d in [mdigest, m.config.digest] + [layer.digest for layer in m.layers]:
                if d not in blobs:
                    blobs.append(d)
            docker_manifest.append({"Config": f"blobs/sha256/{image_id[7:]}", "RepoTags": tags,
                                    "Layers": [f"blobs/sha256/{layer.digest[7:]}" for layer in m.layers]})
            for tag in tags or [""]:
                desc: dict[str, Any] = {"mediaType": m.media_type, "digest": mdigest, "size": len(body)}
                if tag:
                    r = parse(tag)
                    desc["annotations"] = {NAME_ANNOTATION: str(r), REF_ANNOTATION: r.tag}
                    repositories.setdefault(r.familiar_name, {})[r.tag] = m.layers[-1].digest[7:] if m.layers else ""
                index.append(desc)
        # Open every blob before releasing the lock: an rmi meanwhile cannot tear the archive.
        fds: dict[str, Any] = {}
        try:
            for d in blobs:
                fds[d] = images.content.open(d)
        except BaseException:
            for f in fds.values():
                f.close()
            raise
    try:
        with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _dir(tar, "blobs")
            _dir(tar, "blobs/sha256")
            for d in blobs:
                info = tarfile.TarInfo(f"blobs/sha256/{d[7:]}")
                info.mode, info.size = 0o644, os.fstat(fds[d].fileno()).st_size
                tar.addfile(info, fds[d])
            _add(tar, "index.json", json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                                "manifests": index}).encode())
            _add(tar, "manifest.json", json.dumps(docker_manifest).encode())
            _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
            if repositories:
                _add(tar, "repositories", json.dumps(repositories).encode())
    finally:
        for f in fds.values():
            f.close()


# -- load -----------------------------------------------------------------------------------
class _Archive:
    """The unpacked archive: files read by archive-relative name, never outside the temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        parts = archive.split_path(name, "archive path")
        p = self.root.joinpath(*parts)
        if not p.is_file() or p.is_symlink():
            raise InvalidArgument(f"invalid image archive: {name!r} is missing or not a regular file")
        return p

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError as e:
            raise InvalidArgument(f"invalid image archive: {name} is not JSON ({e})") from None

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def blob(self, digest: str) -> Path:
        return self.path(f"blobs/sha256/{check_digest(digest)}")


def _layer_media_type(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(GZIP_MAGIC):
        return DOCKER_LAYER_GZIP
    if head.startswith(ZSTD_MAGIC):
        return OCI_LAYER_ZSTD
    return DOCKER_LAYER


def _tags_from(desc: dict[str, Any]) -> list[str]:
    ann = desc.get("annotations") or {}
    name = ann.get(NAME_ANNOTATION) or ""
    ref_name = ann.get(REF_ANNOTATION) or ""
    if not name and (":" in ref_name or "/" in ref_name):
        name = ref_name
    return [parse(name).familiar()] if name else []


def _oci_images(arc: _Archive, platform: str) -> list[tuple[bytes, list[str]]]:
    """(manifest bytes, tags) for each entry of an OCI layout's index.json."""
    index = arc.json("index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InvalidArgument("invalid image archive: index.json has no 'manifests' list")
    docker_tags: dict[str, list[str]] = {}
    if arc.has("manifest.json"):
        for entry in arc.json("manifest.json"):
            docker_tags.setdefault(str(entry.get("Config", "")).rpartition("/")[2], []).extend(entry.get("RepoTags") or [])
    out = []
    for desc in index["manifests"]:
        digest = desc.get("digest", "")
        body = arc.blob(digest).read_bytes()
        if digest_bytes(body) != digest:
            raise InvalidArgument(f"invalid image archive: manifest {digest} does not match its content")
        parsed = parse_manifest(body, desc.get("mediaType", ""))
        if isinstance(parsed, Index):
            chosen = select_platform(parsed, platform)
            body = arc.blob(chosen.digest).read_bytes()
            if digest_bytes(body) != chosen.digest:
                raise InvalidArgument(f"invalid image archive: manifest {chosen.digest} does not match its content")
            parsed = parse_manifest(body, chosen.media_type)
            if not isinstance(parsed, Manifest):
                raise InvalidArgument("invalid image archive: nested indexes are not supported")
        tags = _tags_from(desc) + [parse(t).familiar() for t in docker_tags.get(parsed.config.digest[7:], [])]
        out.append((body, list(dict.fromkeys(tags))))
    return out


def _docker_images(arc: _Archive, images: ImageStore, tx: StoreTransaction) -> list[tuple[bytes, list[str]]]:
    """Older `docker save` archives: manifest.json with `<id>/layer.tar` paths and no index."""
    entries = arc.json("manifest.json")
    if not isinstance(entries, list):
        raise InvalidArgument("invalid image archive: manifest.json is not a list")
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) or not isinstance(entry.get("Layers"), list):
            raise InvalidArgument("invalid image archive: a manifest.json entry lacks Config or Layers")
        cfg = arc.read(entry["Config"])
        layers = []
        for name in entry["Layers"]:
            p = arc.path(name)
            with open(p, "rb") as f:
                d = images.content.write_stream(f)
            tx.blob(d)
            layers.append(Descriptor(_layer_media_type(p), d, p.stat().st_size))
        config = Descriptor(OCI_CONFIG, digest_bytes(cfg), len(cfg))
        tx.blob(config.digest)
        images.content.write(cfg)
        body = manifest_json(config, layers, OCI_MANIFEST)
        out.append((body, [parse(t).familiar() for t in entry.get("RepoTags") or []]))
    return out


def load(images: ImageStore, fileobj: BinaryIO, platform: str = "", progress: Progress = ignore) -> list[ImageInfo]:
    """`docker load`: import every image of the archive (plain or gzip tar); all or nothing."""
    tmp = images.layers_dir / f".tmp-load-{secrets.token_hex(8)}"
    tmp.mkdir()
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            archive.extract(fileobj, fd)
        finally:
            os.close(fd)
        arc = _Archive(tmp)
        with StoreTransaction(images) as tx:
            if arc.has("index.json"):
                found = _oci_images(arc, platform)
            elif arc.has("manifest.json"):
                found = _docker_images(arc, images, tx)
            else:
                raise InvalidArgument("invalid image archive: neither manifest.json (docker save) nor index.json (OCI layout) found")
            if not found:
                raise InvalidArgument("invalid image archive: it contains no images")
            prepared = [(_import_blobs(images, arc, tx, body, progress), tags) for body, tags in found]
            by_id: dict[str, ImageInfo] = {}
            for mdigest, tags in prepared:
                info = images.register_image(mdigest, tags)
                by_id[info.id] = info  # an image saved under two tags is one image
            loaded = list(by_id.values())
        for info in loaded:
            for t in info.repo_tags or [info.id]:
                progress(ProgressEvent("", f"Loaded image{' ID' if t == info.id else ''}: {t}"))
        return loaded
    finally:
        remove_tree(tmp)


def _import_blobs(images: ImageStore, arc: _Archive, tx: StoreTransaction, body: bytes, progress: Progress) -> str:
    """Copy and verify one image's blobs into the store, unpack its layers; return the manifest digest."""
    m = parse_manifest(body)
    assert isinstance(m, Manifest)
    for desc in [m.config, *m.layers]:
        if not images.content.has(desc.digest):
            src = arc.blob(desc.digest) if arc.has(f"blobs/sha256/{desc.digest[7:]}") else None
            if src is None:
                raise InvalidArgument(f"invalid image archive: blob {desc.digest} is missing")
            if src.stat().st_size != desc.size:
                raise InvalidArgument(f"invalid image archive: blob {desc.digest} has {src.stat().st_size} bytes, the manifest says {desc.size}")
            tx.blob(desc.digest)
            with open(src, "rb") as f:
                images.content.write_stream(f, expected=desc.digest)
    config = check_config(images.content.read(m.config.digest))
    diff_ids = config["rootfs"]["diff_ids"]
    if len(diff_ids) != len(m.layers):
        raise InvalidArgument(f"invalid image: {len(m.layers)} layers but {len(diff_ids)} diff ids in the config")
    for chain, diff_id, layer in zip(chain_ids(diff_ids), diff_ids, m.layers):
        tx.layer(chain)
        progress(ProgressEvent(short_id(layer.digest), "Loading layer", 0, layer.size))
        unpack_layer(images, chain, diff_id, layer.digest)
    mdigest = digest_bytes(body)
    tx.blob(mdigest)
    images.content.write(body, expected=mdigest)
    return mdigest
