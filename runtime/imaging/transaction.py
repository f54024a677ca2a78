"""All-or-nothing additions to the store: what an operation wrote is removed again if it fails.

Pull, load and build write blobs and unpacked layers before the image is published with
`ImageStore.register_image`. If anything fails (bad digest, truncated blob, registry error,
Ctrl-C), `StoreTransaction` deletes exactly the blobs and layer dirs that did not exist before
and that no image references, so the store is as it was. After a kill -9 the leftovers are
unreferenced and go with the next `ImageStore.gc()` (rmi or prune).
"""
from __future__ import annotations

from types import TracebackType

from ..fsutil import remove_tree
from ..images import ImageStore
from ..store import check_digest


class StoreTransaction:
    """`with StoreTransaction(images) as tx:` ... `tx.blob(d)` / `tx.layer(c)` record what is new."""

    def __init__(self, images: ImageStore) -> None:
        self.images = images
        self.blobs_before = set(images.content.digests())
        self.layers_before = {p.name for p in images.layers_dir.iterdir()}
        self.new_blobs: set[str] = set()
        self.new_layers: set[str] = set()

    def __enter__(self) -> StoreTransaction:
        return self

    def blob(self, digest: str) -> None:
        if digest not in self.blobs_before:
            self.new_blobs.add(digest)

    def layer(self, chain_id: str) -> None:
        if check_digest(chain_id) not in self.layers_before:
            self.new_layers.add(chain_id)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            return
        with self.images.lock:
            blobs, chains = self.images._referenced()
            for d in self.new_blobs - blobs:
                self.images.content.delete(d)
            for c in self.new_layers - chains:
                remove_tree(self.images.layers_dir / check_digest(c))
