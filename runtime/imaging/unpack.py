"""Unpack one layer blob into `layers/<chainid>/diff`, verified and atomic.

The runtime's `archive.extract` already walks every path from a directory fd with O_NOFOLLOW
(no `..`, no symlinked parent, no hard link out of the tree) and turns `.wh.` entries into
overlay whiteouts. This module adds what pulled layers need on top: gzip and zstd blobs, the
layer's diff id checked against the uncompressed bytes *while* they stream, xattrs from PAX
headers (Docker's `SCHILY.xattr.*`, except `trusted.overlay.*`, which would let a layer forge
overlay metadata), and the same temp-dir-then-rename publication, so a layer dir that exists
is always complete and correct.
"""
from __future__ import annotations

import errno
import os
import secrets
import tarfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from .. import archive
from ..errors import InvalidArgument
from ..fsutil import atomic_write_json, remove_tree
from ..images import ImageStore
from ..store import check_digest
from .streams import Chunk, LayerReader, file_chunks

XATTR_PREFIX = "SCHILY.xattr."
FORBIDDEN_XATTR_PREFIX = "trusted.overlay."


def _apply_xattrs(dest_fd: int, member: tarfile.TarInfo) -> None:
    names = [k for k in member.pax_headers if k.startswith(XATTR_PREFIX)]
    if not names:
        return
    parts = archive.split_path(member.name)
    if not parts:
        return
    parent = archive.open_dir(dest_fd, parts[:-1], create=False, name=member.name)
    try:
        target = f"/proc/self/fd/{parent}/{parts[-1]}"
        for key in names:
            attr = key[len(XATTR_PREFIX):]
            if attr.startswith(FORBIDDEN_XATTR_PREFIX):
                raise InvalidArgument(f"invalid layer entry {member.name!r}: xattr {attr!r} would forge overlay metadata")
            value = member.pax_headers[key].encode("utf-8", "surrogateescape")
            try:
                os.setxattr(target, attr, value, follow_symlinks=False)
            except OSError as e:
                # Docker ignores what the filesystem cannot hold (EPERM/ENOTSUP, e.g. user.* on a symlink).
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
    finally:
        os.close(parent)


def extract_layer(stream: BinaryIO, dest_fd: int) -> None:
    """Unpack a plain layer tar (already decompressed) below `dest_fd`, with whiteouts and xattrs."""
    as_root = os.geteuid() == 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                try:
                    archive._extract_member(tar, member, dest_fd, True, as_root)
                except (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError) as e:
                    # What the tar itself makes impossible (an empty link target, a file where a
                    # directory must be); disk errors such as ENOSPC still propagate as they are.
                    raise InvalidArgument(f"invalid layer entry {member.name!r}: {e.strerror}") from None
                except PermissionError as e:
                    if not member.islnk():
                        raise
                    # A hard link to a directory (EPERM): no tar Docker writes contains one.
                    raise InvalidArgument(f"invalid layer entry {member.name!r}: {e.strerror}") from None
                if as_root:
                    _apply_xattrs(dest_fd, member)
    except tarfile.TarError as e:
        raise InvalidArgument(f"invalid layer tar: {e}") from None
    except EOFError as e:
        raise InvalidArgument(f"invalid layer tar: truncated ({e})") from None


def unpack_layer(images: ImageStore, chain_id: str, diff_id: str, blob: str,
                 on_bytes: Callable[[int], None] | None = None) -> tuple[Path, bool]:
    """Make `layers/<chain_id>/diff` from a stored blob; returns (dir, whether it was created now)."""
    final = images.layers_dir / check_digest(chain_id)
    if (final / "diff").is_dir():
        return final / "diff", False
    with images.content.open(blob) as f:
        return unpack_chunks(images, chain_id, diff_id, file_chunks(f), blob, on_bytes)


def unpack_chunks(images: ImageStore, chain_id: str, diff_id: str, chunks: Iterable[Chunk], blob: str,
                  on_bytes: Callable[[int], None] | None = None) -> tuple[Path, bool]:
    """Make `layers/<chain_id>/diff` from the blob's bytes as they arrive (a pull streams the
    download straight in); returns (dir, whether it was created now).

    The uncompressed stream must hash to `diff_id`; otherwise nothing is published. The caller
    must not let `chunks` end normally unless the blob itself checked out (digest and size):
    the layer dir is renamed into place as soon as they are consumed and the diff id matches.
    """
    final = images.layers_dir / check_digest(chain_id)
    if (final / "diff").is_dir():
        return final / "diff", False
    tmp = images.layers_dir / f".tmp-{secrets.token_hex(8)}"
    (tmp / "diff").mkdir(parents=True)
    try:
        reader = LayerReader(chunks, f"layer {blob}", diff_id, on_bytes)
        fd = os.open(tmp / "diff", os.O_RDONLY | os.O_DIRECTORY)
        try:
            extract_layer(reader, fd)  # type: ignore[arg-type]
        finally:
            os.close(fd)
        reader.finish()
        atomic_write_json(tmp / "meta.json", {"chain_id": chain_id, "diff_id": diff_id, "blob": blob, "size": reader.count})
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "diff").is_dir():
                raise
            remove_tree(tmp)  # another thread unpacked it first
            return final / "diff", False
    except BaseException:
        remove_tree(tmp)
        raise
    return final / "diff", True
