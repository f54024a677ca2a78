"""`ImageService`: the one object the agent's API server (and the CLI through it) calls.

It binds the runtime's `ImageStore` to credentials (Docker's config.json), the
insecure-registries setting, and the builder. Every method is blocking and thread-safe; the
asyncio server runs them in a thread (`asyncio.to_thread`) and forwards `progress` events to
the client stream. Errors are the runtime's (`InvalidArgument`, `NotFound`, `Conflict`) plus
`Unauthorized` and `RegistryError` (imaging.errors), each with a one-line message.
"""
from __future__ import annotations

import contextlib
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..errors import NotFound
from ..images import ImageInfo, ImageStore
from . import pull as _pull
from . import push as _push
from . import saveload
from .auth import Credentials, CredentialStore
from .build import Builder, BuildOptions
from .progress import Progress, ignore
from .reference import parse, registry_domain
from .sandbox import BuildSandbox
from .registry import RegistryClient, is_loopback
from .tlsconfig import DEFAULT_CERTS_DIR


@dataclass
class HistoryEntry:
    """One line of `docker history`: newest first."""

    id: str            # image id for the top entry, "<missing>" for the others (as Docker prints)
    created: str
    created_by: str
    size: int
    comment: str
    empty_layer: bool


class ImageService:
    """Pull, push, login/logout, save/load, build, history, inspect, prune over one store."""

    def __init__(self, images: ImageStore, credentials: CredentialStore | None = None,
                 insecure_registries: list[str] | None = None,
                 users: Callable[[str], list[str]] = lambda _image_id: [],
                 certs_dir: Path = DEFAULT_CERTS_DIR, sandbox: BuildSandbox | None = None,
                 users_lock: AbstractContextManager[Any] | None = None) -> None:
        """`users(image_id)` lists containers using an image (prune keeps those), as in `ImageStore.remove`;
        `users_lock` is held around prune so no container can be created on an image being removed
        (the Runtime's container lock; taken before the store's, as `Runtime.remove_image` does).
        `sandbox` places RUN steps in their own netns and cgroup (`Runtime.image_service()` gives one)."""
        self.images = images
        self.credentials = credentials or CredentialStore()
        self.insecure = set(insecure_registries or [])
        self.users = users
        self.certs_dir = certs_dir
        self.sandbox = sandbox
        self.users_lock = users_lock or contextlib.nullcontext()

    def recover(self) -> None:
        """At agent start-up, before serving: drop what a crash (kill -9) mid pull/load/build left.

        Temp dirs go with the runtime's sweep; blobs and layer dirs written before the crash
        are unreferenced and go with a gc. Safe only while no image operation runs (start-up).
        """
        if self.sandbox is not None:
            self.sandbox.recover()
        with self.images.lock:
            self.images.sweep()
            self.images.gc()

    def client(self, domain: str) -> RegistryClient:
        return RegistryClient(domain, self.credentials.get(domain), insecure=self.is_insecure(domain), certs_dir=self.certs_dir)

    def is_insecure(self, domain: str) -> bool:
        """Docker's rule: listed as insecure, or on loopback."""
        return domain in self.insecure or is_loopback(domain)

    # -- registry ---------------------------------------------------------------------------
    def login(self, registry: str, username: str, password: str) -> str:
        """Check the credentials against the registry (`GET /v2/`), then store them. Returns "Login Succeeded"."""
        domain = registry_domain(registry)
        creds = Credentials(username, password)
        client = RegistryClient(domain, creds, insecure=self.is_insecure(domain), certs_dir=self.certs_dir)
        try:
            client.ping()
        finally:
            client.close()
        self.credentials.store(domain, creds)
        return "Login Succeeded"

    def logout(self, registry: str = "") -> str:
        domain = registry_domain(registry)
        if not self.credentials.erase(domain):
            return f"Not logged in to {domain}"
        return f"Removing login credentials for {domain}"

    def pull(self, reference: str, platform: str = "", progress: Progress = ignore) -> ImageInfo:
        ref = parse(reference)
        client = self.client(ref.domain)
        try:
            return _pull.pull(self.images, client, ref, platform=platform, progress=progress)
        finally:
            client.close()

    def push(self, reference: str, progress: Progress = ignore) -> str:
        """Push a local tag; returns the manifest digest the registry stored."""
        ref = parse(reference)
        client = self.client(ref.domain)
        try:
            return _push.push(self.images, client, ref, progress=progress)
        finally:
            client.close()

    # -- archives ---------------------------------------------------------------------------
    def save(self, refs: list[str], fileobj: BinaryIO) -> None:
        saveload.save(self.images, refs, fileobj)

    def load(self, fileobj: BinaryIO, platform: str = "", progress: Progress = ignore) -> list[ImageInfo]:
        return saveload.load(self.images, fileobj, platform=platform, progress=progress)

    # -- build ------------------------------------------------------------------------------
    def build(self, context_dir: Path, options: BuildOptions | None = None, pull_missing: bool = True,
              progress: Progress = ignore) -> ImageInfo:
        """Build a Dockerfile; base images missing locally are pulled (like `docker build`)."""
        def base_image(ref: str, platform: str) -> str:
            try:
                return self.images.resolve(parse(ref).familiar())
            except NotFound:
                if not pull_missing:
                    raise
            return self.pull(ref, platform=platform, progress=progress).id

        return Builder(self.images, base_image, self.sandbox).build(Path(context_dir), options or BuildOptions(), progress)

    # -- inspection -------------------------------------------------------------------------
    def inspect(self, ref: str) -> dict[str, Any]:
        """`docker image inspect`: Id, RepoTags, RepoDigests, Created, Size, Config, RootFS, manifest digest."""
        with self.images.lock:
            info = self.images.image(ref)
            entry = self.images._meta()["images"][info.id]
            cfg = self.images.oci_config(info.id)
        return {"Id": info.id, "RepoTags": info.repo_tags, "RepoDigests": entry.get("repo_digests", []),
                "Created": cfg.get("created", ""), "Author": cfg.get("author", ""), "Architecture": cfg.get("architecture", ""),
                "Os": cfg.get("os", ""), "Size": info.size, "Config": cfg.get("config") or {},
                # Docker's shape, not the OCI config's (`type`/`diff_ids`): scripts written for `docker inspect` work
                "RootFS": {"Type": (cfg.get("rootfs") or {}).get("type", "layers"), "Layers": info.layers},
                "ManifestDigest": info.digest}

    def history(self, ref: str) -> list[HistoryEntry]:
        """`docker history`: config history newest first, sizes from the layer each entry made."""
        with self.images.lock:
            info = self.images.image(ref)
            cfg = self.images.oci_config(info.id)
            manifest = json.loads(self.images.content.read(info.digest))
        sizes = [layer["size"] for layer in manifest["layers"]]
        out, layer = [], 0
        for h in cfg.get("history") or []:
            empty = bool(h.get("empty_layer"))
            size = 0 if empty or layer >= len(sizes) else sizes[layer]
            layer += 0 if empty else 1
            out.append(HistoryEntry("<missing>", h.get("created", ""), h.get("created_by", ""), size,
                                    h.get("comment", ""), empty))
        out.reverse()
        if out:
            out[0].id = info.id
        return out

    def prune(self, all_images: bool = False) -> dict[str, Any]:
        """`docker image prune [-a]`: remove dangling (or all unused) images, then unreferenced blobs/layers.

        Returns {"deleted": [...lines...], "space_reclaimed": bytes} and drops the build cache
        entries whose layers are gone.
        """
        with self.users_lock, self.images.lock:
            before = self._disk_usage()
            meta = self.images._meta()
            tagged = set(meta["tags"].values())
            deleted: list[str] = []
            for image_id in list(meta["images"]):
                if (image_id in tagged and not all_images) or self.users(image_id):
                    continue
                deleted += self.images.remove(image_id, force=True, users=self.users)
            self.images.gc()
            return {"deleted": deleted, "space_reclaimed": max(0, before - self._disk_usage())}

    def _disk_usage(self) -> int:
        total = 0
        root = self.images.layers_dir.parent
        for sub in ("blobs", "layers"):
            for p in (root / sub).rglob("*"):
                try:
                    if p.is_file() and not p.is_symlink():
                        total += p.stat().st_size
                except OSError:
                    pass
        return total
