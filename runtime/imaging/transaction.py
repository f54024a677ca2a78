"""All-or-nothing additions to the store: what an operation wrote is removed again if it fails.

Pull, load and build write blobs and unpacked layers before the image is published with
`ImageStore.register_image`. If anything fails (bad digest, truncated blob, registry error,
Ctrl-C), `StoreTransaction` deletes exactly the blobs and layer dirs that did not exist before
and that no image references, so the store is as it was. After a kill -9 the leftovers are
unreferenced and go with the next `ImageStore.gc()` (rmi or prune; `ImageService.recover()`).
While the operation runs, what it writes is leased (`ImageStore.leased`) so that a concurrent
rmi/prune cannot delete it, and a failure never deletes what another operation still holds.
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
        self.leases: list[str] = []

    def __enter__(self) -> StoreTransaction:
        return self

    def _lease(self, key: str) -> None:
        """Keep `key` from the store's gc until this transaction ends (call before writing it)."""
        with self.images.lock:
            self.images.leased[key] += 1
            self.leases.append(key)

    def blob(self, digest: str) -> None:
        """Record a blob this operation is about to write (or has written)."""
        if digest not in self.blobs_before and digest not in self.new_blobs:
            self.new_blobs.add(digest)
            self._lease(digest)

    def layer(self, chain_id: str) -> None:
        """Record a layer dir this operation is about to unpack."""
        if check_digest(chain_id) not in self.layers_before and chain_id not in self.new_layers:
            self.new_layers.add(chain_id)
            self._lease(chain_id)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with self.images.lock:
            for key in self.leases:
                self.images.leased[key] -= 1
                if self.images.leased[key] <= 0:
                    del self.images.leased[key]
            if kind is None:
                return
            blobs, chains = self.images._referenced()
            for d in self.new_blobs - blobs - set(self.images.leased):
                self.images.content.delete(d)
            for c in self.new_layers - chains - set(self.images.leased):
                remove_tree(self.images.layers_dir / check_digest(c))
