"""OCI and Docker v2 schema 2 manifests, indexes and manifest lists: parsing, checking, platforms.

Everything read from a registry or an archive passes `parse_manifest` before it touches the
store, so an unknown media type, a malformed descriptor or a wrong digest is refused with one
line instead of half-importing an image.
"""
from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument, NotFound
from ..store import check_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
# Layer media type -> compression of the blob ("" means a plain tar).
LAYER_TYPES = {
    OCI_LAYER: "", OCI_LAYER_GZIP: "gzip", OCI_LAYER_ZSTD: "zstd", OCI_LAYER_NONDIST: "",
    OCI_LAYER_NONDIST_GZIP: "gzip", DOCKER_LAYER: "", DOCKER_LAYER_GZIP: "gzip", DOCKER_FOREIGN_GZIP: "gzip",
}
# What a client sends in Accept when it fetches a manifest by tag.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about one blob."""

    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] = field(default_factory=dict, compare=False)
    annotations: dict[str, str] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = self.annotations
        return out


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2): one config and the layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    """An OCI index or Docker manifest list: one manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise InvalidArgument(f"invalid manifest: {where} is not an object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"invalid manifest: {where} needs mediaType, digest and a non-negative size")
    try:
        check_digest(digest)
    except InvalidArgument:
        raise InvalidArgument(f"invalid manifest: {where} has unsupported digest {digest!r} (only sha256 is supported)") from None
    plat = obj.get("platform") or {}
    ann = obj.get("annotations") or {}
    if not isinstance(plat, dict) or not isinstance(ann, dict):
        raise InvalidArgument(f"invalid manifest: {where} has a malformed platform or annotations")
    return Descriptor(media_type, digest, size, plat, ann)


def parse_manifest(data: bytes, media_type: str = "") -> Manifest | Index:
    """Parse manifest or index bytes; `media_type` is the Content-Type (the body's field wins if set)."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"invalid manifest: not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise InvalidArgument("invalid manifest: not a JSON object")
    if obj.get("schemaVersion") == 1:
        raise InvalidArgument("unsupported manifest: Docker schema 1 images are deprecated; push the image again with a current client")
    if obj.get("schemaVersion") != 2:
        raise InvalidArgument(f"invalid manifest: schemaVersion {obj.get('schemaVersion')!r}, expected 2")
    kind = obj.get("mediaType") or media_type
    if not kind:
        kind = OCI_INDEX if "manifests" in obj else OCI_MANIFEST
    if kind in INDEX_TYPES:
        entries = obj.get("manifests")
        if not isinstance(entries, list):
            raise InvalidArgument("invalid index: 'manifests' must be a list")
        return Index(kind, tuple(_descriptor(m, f"manifests[{i}]") for i, m in enumerate(entries)))
    if kind not in MANIFEST_TYPES:
        raise InvalidArgument(f"unsupported manifest media type {kind!r}: expected one of {', '.join(MANIFEST_TYPES + INDEX_TYPES)}")
    config = _descriptor(obj.get("config"), "config")
    if config.media_type not in CONFIG_TYPES:
        raise InvalidArgument(f"unsupported config media type {config.media_type!r}: this is not a container image")
    layers_raw = obj.get("layers")
    if not isinstance(layers_raw, list):
        raise InvalidArgument("invalid manifest: 'layers' must be a list")
    layers = tuple(_descriptor(m, f"layers[{i}]") for i, m in enumerate(layers_raw))
    for layer in layers:
        if layer.media_type not in LAYER_TYPES:
            raise InvalidArgument(f"unsupported layer media type {layer.media_type!r} for {layer.digest}")
    return Manifest(kind, config, layers)


def host_platform() -> str:
    """`linux/amd64` style name of this machine (Go's GOARCH spelling)."""
    machine = _platform.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm/v7", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x"}
    return "linux/" + arch.get(machine, machine)


def parse_platform(text: str) -> tuple[str, str, str]:
    """`os/arch[/variant]` -> parts; `arm64` defaults its variant to v8 as containerd does."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgument(f"invalid platform {text!r}: use os/arch[/variant], e.g. linux/arm64")
    os_, arch = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else ("v8" if arch == "arm64" else "")
    return os_, arch, variant


def select_platform(index: Index, wanted: str = "") -> Descriptor:
    """The index entry for `wanted` (default: this host), as `docker pull --platform` picks it."""
    os_, arch, variant = parse_platform(wanted or host_platform())
    candidates = []
    for desc in index.manifests:
        p = desc.platform
        if desc.media_type not in MANIFEST_TYPES or p.get("os") != os_ or p.get("architecture") != arch:
            continue
        have = p.get("variant") or ("v8" if arch == "arm64" else "")
        if variant and have and have != variant:
            continue
        candidates.append(desc)
    if not candidates:
        offered = sorted({"/".join(filter(None, (d.platform.get("os"), d.platform.get("architecture"), d.platform.get("variant"))))
                          for d in index.manifests if d.platform})
        raise NotFound(f"no matching manifest for {os_}/{arch}{'/' + variant if variant else ''} in the manifest list: "
                       f"the image offers {', '.join(offered) or 'no platforms'}")
    return candidates[0]


def manifest_json(config: Descriptor, layers: list[Descriptor], media_type: str = OCI_MANIFEST) -> bytes:
    """Canonical bytes for a manifest the store writes (sorted keys, so equal images hash equal)."""
    obj = {"schemaVersion": 2, "mediaType": media_type, "config": config.to_json(), "layers": [d.to_json() for d in layers]}
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def check_config(data: bytes) -> dict[str, Any]:
    """Parse an image config and check what the runtime depends on (rootfs.diff_ids, os)."""
    try:
        cfg = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"invalid image config: not JSON ({e})") from None
    rootfs = cfg.get("rootfs") if isinstance(cfg, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidArgument("invalid image config: rootfs.diff_ids must be a list of digests")
    for d in diff_ids:
        check_digest(d)
    if cfg.get("os", "linux") != "linux":
        raise InvalidArgument(f"image operating system {cfg.get('os')!r} cannot be used on this platform (linux)")
    _check_run_config(cfg.get("config"))
    return cfg


def _text(value: Any) -> bool:
    return isinstance(value, str) and "\0" not in value


def _check_run_config(run: Any) -> None:
    """The fields a container is made from must have the types Docker's Go structs give them.

    An image is untrusted input: a string where a list belongs (`"Entrypoint": "sh"`), a number
    for a path or a NUL byte in an argument would otherwise surface as a crash or a mangled
    command at `run`, long after the pull that brought the image in.
    """
    if run is None:
        return
    if not isinstance(run, dict):
        raise InvalidArgument("invalid image config: 'config' must be an object")
    for key in ("Cmd", "Entrypoint", "Env"):
        value = run.get(key)
        if value is not None and not (isinstance(value, list) and all(_text(v) for v in value)):
            raise InvalidArgument(f"invalid image config: config.{key} must be a list of strings")
    for key in ("WorkingDir", "User", "StopSignal"):
        value = run.get(key)
        if value is not None and not _text(value):
            raise InvalidArgument(f"invalid image config: config.{key} must be a string")
    for key in ("ExposedPorts", "Volumes", "Labels"):
        value = run.get(key)
        if value is not None and not (isinstance(value, dict) and all(_text(k) for k in value)):
            raise InvalidArgument(f"invalid image config: config.{key} must be an object")
    labels = run.get("Labels") or {}
    if not all(_text(v) for v in labels.values()):
        raise InvalidArgument("invalid image config: config.Labels values must be strings")
