"""mount / umount2 from the cffi extension against the real kernel."""
from __future__ import annotations

import pytest

from flotilla.runtime.native import syscalls

pytestmark = pytest.mark.root


def test_mount_and_umount_tmpfs(tmp_path, unique):
    target = tmp_path / f"mnt-{unique}"
    target.mkdir()
    syscalls.mount(f"flotilla-{unique}", target, "tmpfs", syscalls.MS_NOSUID, "size=1m")
    try:
        assert any(f"flotilla-{unique}" in line for line in open("/proc/self/mountinfo"))
        (target / "f").write_text("x")
        syscalls.mount(None, target, None, syscalls.MS_REMOUNT | syscalls.MS_RDONLY | syscalls.MS_NOSUID)
        with pytest.raises(OSError) as e:
            (target / "g").write_text("x")
        assert e.value.errno == 30  # EROFS
    finally:
        syscalls.umount2(target, syscalls.MNT_DETACH)
    assert not any(unique in line for line in open("/proc/self/mountinfo"))


def test_mount_errors_name_the_paths(tmp_path, unique):
    with pytest.raises(FileNotFoundError) as e:
        syscalls.mount("none", tmp_path / f"missing-{unique}", "tmpfs")
    assert f"missing-{unique}" in str(e.value)
    with pytest.raises(OSError) as e:
        syscalls.umount2(tmp_path)
    assert e.value.errno == 22  # EINVAL: not a mount point
