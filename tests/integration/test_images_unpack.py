"""Layer unpacking against hostile and unusual tarballs (root: whiteouts, devices, xattrs, ownership).

Each case unpacks through `unpack_layer` into a fresh store and checks that nothing escaped the
layer dir, that a refused layer leaves no layer dir and no temp dir, and that whiteouts and
xattrs come out as overlayfs expects.
"""
from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flotilla.runtime.errors import InvalidArgument
from flotilla.runtime.images import ImageStore
from flotilla.runtime.imaging.unpack import unpack_layer

pytestmark = pytest.mark.root


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", pax: dict | None = None,
          mode: int = 0o644, dev: tuple[int, int] = (0, 0)) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    info.devmajor, info.devminor = dev
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if pax:
        info.pax_headers = pax
    return info, data


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def sha(data: bytes) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(data).hexdigest()


def unpack(tmp: Path, plain: bytes, blob: bytes | None = None, diff_id: str | None = None) -> Path:
    store = ImageStore(tmp / "root")
    blob = plain if blob is None else blob
    digest = store.content.write(blob)
    path, created = unpack_layer(store, diff_id or sha(plain), diff_id or sha(plain), digest)
    assert created
    return path


def assert_nothing_left(tmp: Path) -> None:
    layers = tmp / "root" / "layers"
    assert list(layers.iterdir()) == []


def test_regular_tree_with_ownership_modes_and_links(tmp_path: Path) -> None:
    info, data = entry("bin/tool", data=b"#!/bin/sh\n", mode=0o4755)
    info.uid, info.gid = 1000, 50
    plain = make_tar([entry("bin", tarfile.DIRTYPE, mode=0o755), (info, data), entry("bin/alias", tarfile.SYMTYPE, link="/bin/tool"),
                      entry("bin/hard", tarfile.LNKTYPE, link="bin/tool"), entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
                      entry("fifo", tarfile.FIFOTYPE)])
    d = unpack(tmp_path, plain)
    st_ = os.lstat(d / "bin/tool")
    assert (st_.st_uid, st_.st_gid, stat.S_IMODE(st_.st_mode)) == (1000, 50, 0o4755)
    assert os.readlink(d / "bin/alias") == "/bin/tool"
    assert os.lstat(d / "bin/hard").st_ino == st_.st_ino
    dev = os.lstat(d / "dev/null")
    assert stat.S_ISCHR(dev.st_mode) and os.major(dev.st_rdev) == 1 and os.minor(dev.st_rdev) == 3
    assert stat.S_ISFIFO(os.lstat(d / "fifo").st_mode)


def test_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    plain = make_tar([entry("etc", tarfile.DIRTYPE, mode=0o755), entry("etc/.wh.passwd"), entry("var", tarfile.DIRTYPE),
                      entry("var/.wh..wh..opq"), entry("var/new", data=b"x")])
    d = unpack(tmp_path, plain)
    wh = os.lstat(d / "etc/passwd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert not (d / "etc/.wh.passwd").exists()
    assert os.getxattr(d / "var", "trusted.overlay.opaque") == b"y"
    assert (d / "var/new").read_bytes() == b"x" and not (d / "var/.wh..wh..opq").exists()


def test_xattrs_applied_but_overlay_xattrs_refused(tmp_path: Path) -> None:
    plain = make_tar([entry("f", data=b"1", pax={"SCHILY.xattr.user.flotilla": "yes"})])
    d = unpack(tmp_path / "a", plain)
    assert os.getxattr(d / "f", "user.flotilla") == b"yes"
    forged = make_tar([entry("dir", tarfile.DIRTYPE, pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc"})])
    with pytest.raises(InvalidArgument, match="forge overlay"):
        unpack(tmp_path / "b", forged)
    assert_nothing_left(tmp_path / "b")


def test_gzip_and_zstd_blobs(tmp_path: Path) -> None:
    plain = make_tar([entry("hello", data=b"world")])
    assert (unpack(tmp_path / "gz", plain, gzip.compress(plain)) / "hello").read_bytes() == b"world"
    assert (unpack(tmp_path / "zst", plain, zstandard.ZstdCompressor().compress(plain)) / "hello").read_bytes() == b"world"


@pytest.mark.parametrize("entries,fragment", [
    ([entry("../escape", data=b"x")], "'..'"),
    ([entry("a/../../escape", data=b"x")], "'..'"),
    ([entry("link", tarfile.SYMTYPE, link="/tmp"), entry("link/escape", data=b"x")], "symlink"),
    ([entry("up", tarfile.SYMTYPE, link=".."), entry("up/escape", data=b"x")], "symlink"),
    ([entry("hard", tarfile.LNKTYPE, link="../../etc/passwd")], "'..'"),
    ([entry("hard", tarfile.LNKTYPE, link="/etc/hostname")], "does not exist in the archive"),
])
def test_escapes_are_refused(tmp_path: Path, entries, fragment: str) -> None:
    outside = tmp_path / "escape"
    with pytest.raises(InvalidArgument) as e:
        unpack(tmp_path, make_tar(entries))
    assert fragment in str(e.value)
    assert not outside.exists() and not (tmp_path / "root" / "escape").exists()
    assert_nothing_left(tmp_path)


def test_absolute_names_stay_inside(tmp_path: Path) -> None:
    d = unpack(tmp_path, make_tar([entry("/abs/file", data=b"in")]))
    assert (d / "abs/file").read_bytes() == b"in"


def test_diff_id_mismatch_and_truncation_leave_nothing(tmp_path: Path) -> None:
    plain = make_tar([entry("f", data=b"content")])
    with pytest.raises(InvalidArgument, match="failed verification"):
        unpack(tmp_path / "a", plain, diff_id="sha256:" + "0" * 64)
    assert_nothing_left(tmp_path / "a")
    with pytest.raises(InvalidArgument):
        unpack(tmp_path / "b", plain, gzip.compress(plain)[:-20])
    assert_nothing_left(tmp_path / "b")


# -- fuzz: random entries never write outside the layer dir and fail only with InvalidArgument --
_NAMES = st.lists(st.sampled_from(["a", "b", "..", ".", "", "/", ".wh.a", ".wh..wh..opq", "c"]), min_size=1, max_size=4).map("/".join)
_ENTRY = st.tuples(_NAMES, st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]),
                   st.sampled_from(["", "a", "../x", "/", "/etc", "a/b", "..", "b/../.."]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_ENTRY, min_size=1, max_size=6))
@example([("a", tarfile.SYMTYPE, "")])                      # found by the fuzzer: empty link target
@example([("a/a", tarfile.LNKTYPE, "a")])                   # found by the fuzzer: hard link to a directory
@example([("a", tarfile.SYMTYPE, ".."), ("a/x", tarfile.REGTYPE, "")])
@example([("a", tarfile.DIRTYPE, ""), ("a", tarfile.REGTYPE, ""), ("a/b", tarfile.REGTYPE, "")])
@example([("b", tarfile.SYMTYPE, "/"), ("c", tarfile.LNKTYPE, "b")])
@example([(".wh.a", tarfile.REGTYPE, ""), ("a", tarfile.DIRTYPE, ""), ("a/.wh..wh..opq", tarfile.REGTYPE, "")])
def test_unpack_fuzz(tmp_path: Path, entries) -> None:
    case = tmp_path / os.urandom(4).hex()
    case.mkdir()
    sentinel = case / "outside"
    sentinel.mkdir()
    plain = make_tar([entry(n, k, data=b"d" if k == tarfile.REGTYPE else b"", link=link) for n, k, link in entries])
    try:
        d = unpack(case, plain)
    except InvalidArgument:
        assert_nothing_left(case)
    else:
        assert d.is_dir()
    assert list(sentinel.iterdir()) == []
    assert sorted(p.name for p in case.iterdir()) == ["outside", "root"]
