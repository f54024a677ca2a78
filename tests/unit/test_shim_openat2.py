"""openat2 with RESOLVE_IN_ROOT from the cffi extension: a container's symlinks stay inside it."""
from __future__ import annotations

import os

import pytest

from flotilla.runtime.native import syscalls


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "f").write_text("inside")
    os.symlink("/etc/f", tmp_path / "abs")
    os.symlink("../../../../../../etc/f", tmp_path / "rel")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.mark.parametrize("path", ["etc/f", "/etc/f", "abs", "rel", "../../etc/f"])
def test_in_root_never_escapes(root, path):
    fd = syscalls.openat2(root, path, os.O_RDONLY, resolve=syscalls.RESOLVE_IN_ROOT)
    try:
        assert os.read(fd, 100) == b"inside"
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)


def test_errors_are_oserror_with_the_path(root):
    with pytest.raises(FileNotFoundError) as e:
        syscalls.openat2(root, "nope", os.O_RDONLY, resolve=syscalls.RESOLVE_IN_ROOT)
    assert e.value.filename == "nope"
    with pytest.raises(OSError) as e:
        syscalls.openat2(root, "abs", os.O_RDONLY, resolve=syscalls.RESOLVE_NO_SYMLINKS)
    assert e.value.errno == 40  # ELOOP


def test_create_through_in_root(root, tmp_path):
    fd = syscalls.openat2(root, "/etc/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, syscalls.RESOLVE_IN_ROOT)
    os.write(fd, b"x")
    os.close(fd)
    assert (tmp_path / "etc" / "new").read_bytes() == b"x"
    assert (tmp_path / "etc" / "new").stat().st_mode & 0o777 == 0o600
