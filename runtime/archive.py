"""Tar in and out of directory trees without ever following a link the tree itself contains.

Layers, `copy_to`, `copy_from`, `export` and `commit` all move tar streams across a boundary
between the host and content someone else wrote (an image, a running container). Every path is
therefore walked one component at a time from a directory fd with O_NOFOLLOW: a `..`, an
absolute name, a hard link to somewhere outside or a symlinked parent directory is refused
instead of being resolved on the host.

Overlay whiteouts: in a layer tar a deleted file `x` is an empty file `.wh.x` and an opaque
directory holds `.wh..wh..opq`; on disk overlayfs uses a 0/0 character device and the
`trusted.overlay.opaque=y` xattr. `extract(whiteouts=True)` and `tar_tree(whiteouts=True)`
convert between the two.
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from .errors import InvalidArgument

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_path(name: str, what: str = "tar entry") -> list[str]:
    """Components of an in-tree path; leading '/' is relative to the tree, '..' is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"invalid {what} {name!r}: '..' would leave the destination")
    return parts


def open_dir(root_fd: int, parts: list[str], create: bool, name: str) -> int:
    """Open the directory `parts` below `root_fd`, never following a symlink (mkdir if `create`)."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise InvalidArgument(f"invalid path {name!r}: {part!r} is a symlink or not a directory") from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _remove_existing(dir_fd: int, base: str, keep_dir: bool) -> None:
    """Make room for a new entry; an existing directory survives when the new entry is one too."""
    try:
        st = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return
        shutil.rmtree(base, dir_fd=dir_fd)
    else:
        os.unlink(base, dir_fd=dir_fd)


def extract(stream: BinaryIO, dest_fd: int, whiteouts: bool = False) -> int:
    """Unpack a (possibly compressed) tar stream below the directory `dest_fd`; return bytes written.

    Ownership is kept when running as root (layers must keep their uids); mode bits are kept.
    """
    as_root = os.geteuid() == 0
    total = 0
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")
    except tarfile.TarError as e:
        raise InvalidArgument(f"invalid tar archive: {e}") from None
    with tar:
        try:
            for member in tar:
                total += _extract_member(tar, member, dest_fd, whiteouts, as_root)
        except tarfile.TarError as e:
            raise InvalidArgument(f"invalid tar archive: {e}") from None
    return total


def _extract_member(tar: tarfile.TarFile, m: tarfile.TarInfo, dest_fd: int, whiteouts: bool, as_root: bool) -> int:
    parts = split_path(m.name)
    if not parts:
        return 0  # the archive's root entry ("./"): the destination already exists
    base = parts[-1]
    parent = open_dir(dest_fd, parts[:-1], create=True, name=m.name)
    try:
        if whiteouts and base == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return 0
        if whiteouts and base.startswith(WHITEOUT_PREFIX):
            hidden = base[len(WHITEOUT_PREFIX):]
            _remove_existing(parent, hidden, keep_dir=False)
            os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
            return 0
        mode = m.mode & 0o7777
        _remove_existing(parent, base, keep_dir=m.isdir())
        size = 0
        if m.isdir():
            try:
                os.mkdir(base, mode, dir_fd=parent)
            except FileExistsError:
                pass
            fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
            try:
                if as_root:
                    os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            return 0
        if m.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
            try:
                src = tar.extractfile(m)
                assert src is not None
                while chunk := src.read(_CHUNK):
                    os.write(fd, chunk)
                    size += len(chunk)
                if as_root:
                    os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, mode)
                os.utime(fd, (m.mtime, m.mtime))
            finally:
                os.close(fd)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=parent)
            if as_root:
                os.chown(base, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        elif m.islnk():
            tparts = split_path(m.linkname, "hard link target")
            if not tparts:
                raise InvalidArgument(f"invalid hard link {m.name!r}: the target is the root directory")
            tparent = open_dir(dest_fd, tparts[:-1], create=False, name=m.linkname)
            try:
                os.link(tparts[-1], base, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(tparent)
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(base, kind | mode, os.makedev(m.devmajor, m.devminor), dir_fd=parent)
            if as_root:
                os.chown(base, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        else:
            raise InvalidArgument(f"invalid tar entry {m.name!r}: unsupported type {m.type!r}")
        return size
    except FileNotFoundError as e:
        if m.islnk():
            raise InvalidArgument(f"invalid hard link {m.name!r}: target {m.linkname!r} does not exist in the archive") from None
        raise e
    finally:
        os.close(parent)


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _info(arcname: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = int(st.st_mtime)
    return info


def _file_data(fd: int, size: int) -> Iterator[bytes]:
    """Exactly `size` bytes of the file (zero-padded if it shrank meanwhile), then tar padding."""
    left = size
    while left > 0:
        chunk = os.read(fd, min(_CHUNK, left))
        if not chunk:
            chunk = b"\0" * left
        left -= len(chunk)
        yield chunk
    if size % tarfile.BLOCKSIZE:
        yield b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)


class TreeWriter:
    """Produces tar bytes for entries found below directory fds (hard links tracked by inode)."""

    def __init__(self, whiteouts: bool = False, skip: set[str] | None = None) -> None:
        self.whiteouts = whiteouts
        self.skip = skip or set()  # mount points of a running container: emitted, their contents not
        self._links: dict[tuple[int, int], str] = {}

    def entry(self, dir_fd: int, base: str, arcname: str) -> Iterator[bytes]:
        """Emit `base` (inside `dir_fd`) as `arcname`, recursing into directories."""
        st = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
        info = _info(arcname, st)
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(base, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                yield from self.directory(fd, arcname, info)
            finally:
                os.close(fd)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._links:
                info.type, info.linkname = tarfile.LNKTYPE, self._links[key]
                yield _header(info)
                return
            if st.st_nlink > 1:
                self._links[key] = arcname
            if arcname in self.skip:  # a file mounted into a running container: its mount point only
                info.size = 0
                yield _header(info)
                return
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                info.size = st.st_size
                yield _header(info)
                yield from _file_data(fd, st.st_size)
            finally:
                os.close(fd)
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(base, dir_fd=dir_fd)
            yield _header(info)
        elif stat.S_ISCHR(st.st_mode) and self.whiteouts and st.st_rdev == 0:
            parent, _, name = arcname.rpartition("/")
            wh = _info(f"{parent}/{WHITEOUT_PREFIX}{name}" if parent else WHITEOUT_PREFIX + name, st)
            wh.mode = 0o644
            yield _header(wh)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE if stat.S_ISBLK(st.st_mode) else tarfile.FIFOTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            yield _header(info)
        # sockets are skipped, as Docker does

    def directory(self, fd: int, arcname: str, info: tarfile.TarInfo | None) -> Iterator[bytes]:
        """Emit a directory (its own entry unless `info` is None) and everything below it."""
        prefix = f"{arcname}/" if arcname else ""
        if info is not None:
            info.type = tarfile.DIRTYPE
            yield _header(info)
            if self.whiteouts and _is_opaque(fd):
                marker = tarfile.TarInfo(prefix + OPAQUE_MARKER)
                marker.mode = 0o644
                yield _header(marker)
        if arcname in self.skip:
            return
        for name in sorted(os.listdir(fd)):
            yield from self.entry(fd, name, prefix + name)


def _is_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def tar_tree(root_fd: int, whiteouts: bool = False) -> Iterator[bytes]:
    """The whole tree below `root_fd` as a tar stream (entries relative, no root entry)."""
    yield from TreeWriter(whiteouts).directory(root_fd, "", None)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def tar_path(dir_fd: int, base: str, arcname: str) -> Iterator[bytes]:
    """One file or directory (recursively) as a tar stream whose top entry is `arcname`."""
    yield from TreeWriter().entry(dir_fd, base, arcname)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


class IterReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks (tar_tree's output, stored as a blob)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self.buf:
            try:
                self.buf = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self.buf))
        b[:n], self.buf = self.buf[:n], self.buf[n:]
        return n
