"""Images: OCI configs and manifests in the content store, tags, and unpacked layers.

`images.json` maps tags to image ids (the config digest) and lists every image with its
manifest digest. Layers are unpacked once per chain id into `layers/<chainid-hex>/diff`, which
becomes an overlay lower dir shared by every container of every image that has the layer.
Issue 3 (pull/push) adds images by writing the same three kinds of blob and calling `add_image`.
"""
from __future__ import annotations

import collections
import copy
import gzip
import hashlib
import io
import json
import os
import platform
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from . import archive
from .clock import now, parse_rfc3339, rfc3339
from .errors import Conflict, InvalidArgument, NotFound
from .fsutil import atomic_write_json, fsync_dir, read_json, remove_tree, sweep_temps
from .reference import parse_reference
from .spec import check_env, merge_env, parse_signal
from .store import ContentStore, check_digest

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG_KEYS = ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "ExposedPorts", "Labels", "StopSignal")
_CHANGE_ALIASES = {
    "cmd": "Cmd", "entrypoint": "Entrypoint", "env": "Env", "workingdir": "WorkingDir", "workdir": "WorkingDir",
    "user": "User", "labels": "Labels", "label": "Labels", "exposedports": "ExposedPorts", "expose": "ExposedPorts",
    "stopsignal": "StopSignal",
}


@dataclass
class ImageInfo:
    """What `docker images` / `docker image inspect` show."""

    id: str
    repo_tags: list[str]
    created: float
    size: int
    config: dict[str, Any]
    layers: list[str] = field(default_factory=list)   # diff ids, bottom first
    digest: str = ""                                   # manifest digest


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain ids: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else "sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def apply_changes(config: dict[str, Any], changes: dict[str, Any] | None) -> dict[str, Any]:
    """Return `config` (the OCI `config` object) updated by `docker import/commit --change`-like changes.

    Keys are Dockerfile instructions in any case (Cmd, ENTRYPOINT, env, WorkingDir/WORKDIR, User,
    Labels/LABEL, ExposedPorts/EXPOSE, StopSignal). Cmd and Entrypoint take a list (exec form) or
    a string (shell form: `/bin/sh -c <string>`); Env a list of NAME=value or a dict, merged over
    the existing Env; Labels a dict, merged; ExposedPorts a list like ["80/tcp"].
    """
    out = copy.deepcopy(config)
    for key, value in (changes or {}).items():
        canon = _CHANGE_ALIASES.get(str(key).lower())
        if canon is None:
            raise InvalidArgument(f"unsupported change {key!r}: use one of {', '.join(CONFIG_KEYS)}")
        if canon in ("Cmd", "Entrypoint"):
            if isinstance(value, str):
                value = ["/bin/sh", "-c", value]
            if value is not None and (not isinstance(value, list) or not all(isinstance(a, str) for a in value)):
                raise InvalidArgument(f"invalid {canon}: give a list of strings or a shell string")
            out[canon] = value
        elif canon == "Env":
            items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else list(value)
            check_env(items, "Env change")
            out["Env"] = merge_env(out.get("Env") or [], items)
        elif canon == "Labels":
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise InvalidArgument("invalid Labels: give a dict of strings")
            out["Labels"] = {**(out.get("Labels") or {}), **value}
        elif canon == "ExposedPorts":
            ports = list(value.keys()) if isinstance(value, dict) else list(value)
            for p in ports:
                num, _, proto = str(p).partition("/")
                if not num.isdigit() or not 0 < int(num) < 65536 or proto not in ("", "tcp", "udp", "sctp"):
                    raise InvalidArgument(f"invalid exposed port {p!r}: use PORT[/tcp|udp|sctp]")
            out["ExposedPorts"] = {**(out.get("ExposedPorts") or {}), **{p if "/" in str(p) else f"{p}/tcp": {} for p in ports}}
        elif canon == "WorkingDir":
            if not isinstance(value, str) or (value and not value.startswith("/")):
                raise InvalidArgument(f"invalid WorkingDir {value!r}: it must be an absolute path")
            out["WorkingDir"] = value
        elif canon == "StopSignal":
            parse_signal(value)
            out["StopSignal"] = str(value)
        else:
            if not isinstance(value, str):
                raise InvalidArgument(f"invalid {canon}: give a string")
            out[canon] = value
    return out


class _Prefixed(io.RawIOBase):
    """A stream with some already-read bytes put back in front (to sniff compression)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(b))
        b[:len(data)] = data
        return len(data)


def _uncompressed(stream: BinaryIO) -> BinaryIO:
    """`docker import` accepts plain or gzip tars; the stored layer is always the plain tar."""
    head = stream.read(2)
    joined = io.BufferedReader(_Prefixed(head, stream))
    return gzip.GzipFile(fileobj=joined) if head == b"\x1f\x8b" else joined  # type: ignore[return-value]


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class ImageStore:
    """Thread-safe image metadata over a ContentStore and the unpacked layer dirs."""

    def __init__(self, root: Path) -> None:
        self.content = ContentStore(root)
        self.layers_dir = root / "layers"
        self.layers_dir.mkdir(exist_ok=True)
        self.meta_path = root / "images.json"
        self.lock = threading.RLock()
        # Blob digests and chain ids (with a count of holders) that pulls, loads and builds in progress
        # have written but not yet published (issue 3's StoreTransaction): gc must leave them alone.
        self.leased: collections.Counter[str] = collections.Counter()

    # -- metadata -------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        try:
            return read_json(self.meta_path)
        except FileNotFoundError:
            return {"images": {}, "tags": {}}

    def _save(self, meta: dict[str, Any]) -> None:
        atomic_write_json(self.meta_path, meta)
        fsync_dir(self.meta_path.parent)  # a tag must survive a power loss like its blobs do

    def sweep(self) -> None:
        """Remove leftovers of imports and unpacks interrupted by a crash (never of one in progress)."""
        with self.lock:
            self.content.sweep()
            sweep_temps(self.layers_dir)

    # -- lookups --------------------------------------------------------------------------
    def resolve(self, ref: str) -> str:
        """Image id for a full id (`sha256:...`), a tag, or a unique id prefix (in Docker's order)."""
        meta = self._meta()
        text = ref.strip()
        if text in meta["images"]:
            return text
        tag = self._as_tag(text)
        if tag in meta["tags"]:
            return meta["tags"][tag]
        hexpart = text.removeprefix("sha256:")
        if hexpart and len(hexpart) <= 64 and all(c in "0123456789abcdef" for c in hexpart):
            matches = [i for i in meta["images"] if i[7:].startswith(hexpart)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise Conflict(f"image id prefix {ref!r} is ambiguous: give more characters")
        raise NotFound(f"no such image: {ref}")

    @staticmethod
    def _as_tag(text: str) -> str | None:
        try:
            return str(parse_reference(text))
        except InvalidArgument:
            return None

    def oci_config(self, image_id: str) -> dict[str, Any]:
        return json.loads(self.content.read(image_id))

    def info(self, image_id: str) -> ImageInfo:
        meta = self._meta()
        entry = meta["images"].get(image_id)
        if entry is None:
            raise NotFound(f"no such image: {image_id}")
        cfg = self.oci_config(image_id)
        manifest = json.loads(self.content.read(entry["manifest"]))
        c = cfg.get("config") or {}
        return ImageInfo(
            id=image_id,
            repo_tags=sorted(t for t, i in meta["tags"].items() if i == image_id),
            created=parse_rfc3339(cfg["created"]) if cfg.get("created") else 0.0,
            size=sum(layer["size"] for layer in manifest["layers"]),
            config={k: c.get(k) for k in CONFIG_KEYS},
            layers=list(cfg["rootfs"]["diff_ids"]),
            digest=entry["manifest"],
        )

    def image(self, ref: str) -> ImageInfo:
        with self.lock:
            return self.info(self.resolve(ref))

    def list(self) -> list[ImageInfo]:
        with self.lock:
            infos = [self.info(i) for i in self._meta()["images"]]
        return sorted(infos, key=lambda i: i.created, reverse=True)

    def lower_dirs(self, image_id: str) -> list[str]:
        """Overlay lower dirs of the image, topmost first (unpacking any layer that is missing)."""
        cfg = self.oci_config(image_id)
        manifest = json.loads(self.content.read(self._meta()["images"][image_id]["manifest"]))
        diff_ids = cfg["rootfs"]["diff_ids"]
        dirs = []
        for chain, diff_id, layer in zip(chain_ids(diff_ids), diff_ids, manifest["layers"]):
            dirs.append(str(self.ensure_layer(chain, diff_id, layer["digest"])))
        return dirs[::-1]

    # -- layers ---------------------------------------------------------------------------
    def layer_dir(self, chain_id: str) -> Path:
        return self.layers_dir / check_digest(chain_id) / "diff"

    def ensure_layer(self, chain_id: str, diff_id: str, blob: str) -> Path:
        """Unpack the layer onto its parent chain once; atomic (temp dir, then rename)."""
        final = self.layers_dir / check_digest(chain_id)
        if (final / "diff").is_dir():
            return final / "diff"
        tmp = self.layers_dir / f".tmp-{secrets.token_hex(8)}"
        (tmp / "diff").mkdir(parents=True)
        try:
            fd = os.open(tmp / "diff", os.O_RDONLY | os.O_DIRECTORY)
            try:
                with self.content.open(blob) as f:
                    size = archive.extract(f, fd, whiteouts=True)
            finally:
                os.close(fd)
            atomic_write_json(tmp / "meta.json", {"chain_id": chain_id, "diff_id": diff_id, "blob": blob, "size": size})
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "diff").is_dir():
                    raise
                remove_tree(tmp)  # another thread unpacked it first
        except BaseException:
            remove_tree(tmp)
            raise
        return final / "diff"

    # -- writing images -------------------------------------------------------------------
    def import_image(self, tar: BinaryIO | Path, reference: str, changes: dict | None = None,
                     comment: str = "Imported from -") -> ImageInfo:
        """`docker import`: the tar becomes one uncompressed layer of a new image tagged `reference`."""
        tag = str(parse_reference(reference)) if reference else None
        config = apply_changes({"Env": [DEFAULT_PATH]}, changes)
        if isinstance(tar, (str, Path)):
            try:
                with open(tar, "rb") as f:
                    return self.import_image(f, reference, changes, comment=f"Imported from {tar}")
            except FileNotFoundError:
                raise NotFound(f"no such file: {tar}") from None
        with self.lock:
            existing = set(self.content.digests())
            try:
                diff_id = self.content.write_stream(_uncompressed(tar))
            except (OSError, EOFError) as e:
                raise InvalidArgument(f"invalid tar archive: {e}") from None
            fresh = [diff_id] if diff_id not in existing else []
            try:
                self.ensure_layer(diff_id, diff_id, diff_id)
            except BaseException:
                self._drop_unreferenced(fresh)
                raise
            created = now()
            return self.add_image(
                config=config, diff_ids=[diff_id], layer_blobs=[diff_id], tag=tag,
                history=[{"created": rfc3339(created), "created_by": "flotilla import", "comment": comment}],
                created=created)

    def add_image(self, config: dict[str, Any], diff_ids: list[str], layer_blobs: list[str], tag: str | None,
                  history: list[dict[str, Any]], created: float) -> ImageInfo:
        """Write the OCI config and manifest blobs for layers already in the store, then tag."""
        with self.lock:
            oci = {
                "architecture": _arch(), "os": "linux", "created": rfc3339(created),
                "config": config, "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history,
            }
            cfg_bytes = json.dumps(oci, sort_keys=True).encode()
            image_id = self.content.write(cfg_bytes)
            manifest = {
                "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": image_id, "size": len(cfg_bytes)},
                "layers": [{"mediaType": self._layer_media_type(b), "digest": b, "size": self.content.size(b)}
                           for b in layer_blobs],
            }
            manifest_digest = self.content.write(json.dumps(manifest, sort_keys=True).encode())
            meta = self._meta()
            meta["images"][image_id] = {"manifest": manifest_digest}
            if tag:
                meta["tags"][tag] = image_id
            self._save(meta)
            return self.info(image_id)

    def _layer_media_type(self, digest: str) -> str:
        """The OCI media type of a stored layer blob by its magic bytes: a commit on top of a
        pulled image reuses gzip or zstd blobs, and a manifest calling them plain tars is wrong."""
        with self.content.open(digest) as f:
            head = f.read(4)
        if head.startswith(b"\x1f\x8b"):
            return MEDIA_LAYER + "+gzip"
        if head.startswith(b"\x28\xb5\x2f\xfd"):
            return MEDIA_LAYER + "+zstd"
        return MEDIA_LAYER

    def register_image(self, manifest_digest: str, tags: list[str], repo_digests: list[str] | None = None) -> ImageInfo:
        """Publish an image whose manifest, config and layer blobs are already stored (issue 3: pull, load, build).

        The caller verified the blobs; this checks they are all present (a concurrent gc may
        have raced) and then records the image and its tags in one atomic metadata write. An
        image id already known keeps its manifest and gains the new tags and repo digests.
        """
        with self.lock:
            manifest = json.loads(self.content.read(manifest_digest))
            image_id = manifest["config"]["digest"]
            for d in [image_id] + [layer["digest"] for layer in manifest["layers"]]:
                if not self.content.has(d):
                    raise NotFound(f"blob {d} of manifest {manifest_digest} is not in the content store")
            meta = self._meta()
            entry = meta["images"].setdefault(image_id, {"manifest": manifest_digest})
            entry["repo_digests"] = sorted(set(entry.get("repo_digests", [])) | set(repo_digests or []))
            for tag in tags:
                meta["tags"][tag] = image_id
            self._save(meta)
            return self.info(image_id)

    def tag(self, source: str, target: str) -> None:
        with self.lock:
            image_id = self.resolve(source)
            tag = str(parse_reference(target))
            meta = self._meta()
            meta["tags"][tag] = image_id
            self._save(meta)

    def remove(self, ref: str, force: bool, users: Callable[[str], list[str]]) -> list[str]:
        """`docker rmi`: untag; delete the image and unreferenced blobs/layers once nothing needs it.

        `users(image_id)` lists the containers (short ids) using the image. With `force` an image
        in use is only untagged (it stays, untagged, until its containers are gone).
        """
        with self.lock:
            image_id = self.resolve(ref)
            meta = self._meta()
            tags = sorted(t for t, i in meta["tags"].items() if i == image_id)
            tag = self._as_tag(ref.strip())
            by_tag = tag is not None and meta["tags"].get(tag) == image_id
            short = image_id[7:19]
            if by_tag and len(tags) > 1:
                del meta["tags"][tag]
                self._save(meta)
                return [f"Untagged: {tag}"]
            if not by_tag and len(tags) > 1 and not force:
                raise Conflict(f"conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories")
            using = users(image_id)
            if using and not force:
                raise Conflict(f"conflict: unable to remove {ref!r} (must force) - container {using[0]} is using its referenced image {short}")
            out = []
            for t in tags:
                del meta["tags"][t]
                out.append(f"Untagged: {t}")
            if not using:
                del meta["images"][image_id]
                out.append(f"Deleted: {image_id}")
            self._save(meta)
            self.gc()
            return out

    def _drop_unreferenced(self, digests: list[str]) -> None:
        referenced = self._referenced()[0]
        for d in digests:
            if d not in referenced:
                self.content.delete(d)

    def _referenced(self) -> tuple[set[str], set[str]]:
        """Blob digests and layer chain ids some image still needs."""
        blobs: set[str] = set()
        chains: set[str] = set()
        for image_id, entry in self._meta()["images"].items():
            blobs.update((image_id, entry["manifest"]))
            manifest = json.loads(self.content.read(entry["manifest"]))
            blobs.update(layer["digest"] for layer in manifest["layers"])
            chains.update(chain_ids(self.oci_config(image_id)["rootfs"]["diff_ids"]))
        return blobs, chains

    def gc(self) -> None:
        """Delete blobs and unpacked layers no image references."""
        with self.lock:
            blobs, chains = self._referenced()
            for d in self.content.digests():
                if d not in blobs and d not in self.leased:
                    self.content.delete(d)
            for entry in self.layers_dir.iterdir():
                chain = "sha256:" + entry.name
                if not entry.name.startswith(".") and chain not in chains and chain not in self.leased:
                    remove_tree(entry)
