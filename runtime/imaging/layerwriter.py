"""Turn a staged directory tree into a stored layer: tar blob, diff id, unpacked layer dir.

Build steps (COPY/ADD, RUN) stage their changes in a temp dir under `layers/` (so a crash
leaves only a `.tmp-` name the runtime's sweep removes). The staged tree is written as an
uncompressed tar blob (its digest is the diff id) with the runtime's tar writer (overlay
whiteouts become `.wh.` entries), and then unpacked from that blob like any pulled layer, so
the layer dir holds exactly what the blob says, never stray overlay metadata.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from .. import archive
from ..images import ImageStore, chain_ids
from .manifest import OCI_LAYER, Descriptor
from .transaction import StoreTransaction
from .unpack import unpack_layer


def commit_tree(images: ImageStore, tx: StoreTransaction, tree: Path, parent_chain: str | None) -> tuple[Descriptor, str]:
    """Store `tree` as a layer on top of `parent_chain`; returns (layer descriptor, diff id)."""
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        reader = io.BufferedReader(archive.IterReader(archive.tar_tree(fd, whiteouts=True)), 1 << 20)
        diff_id = images.content.write_stream(reader)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    tx.blob(diff_id)
    chain = chain_ids([parent_chain, diff_id])[1] if parent_chain else diff_id
    tx.layer(chain)
    unpack_layer(images, chain, diff_id, diff_id)
    return Descriptor(OCI_LAYER, diff_id, images.content.size(diff_id)), diff_id
