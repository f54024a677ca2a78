"""Fixtures shared by every test: unique names, a locally built busybox image, leak checks.

Nothing here reaches the internet: the busybox image is built from Debian's busybox-static
binary on this machine.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"


def pytest_collection_modifyitems(config, items):
    """Tests marked `root` need root; everywhere else (a developer's laptop) they skip."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root and real kernel features")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def unique() -> str:
    """A short suffix for every kernel object and name a test creates, so runs never collide."""
    return uuid.uuid4().hex[:8]


def build_busybox_rootfs_tar(dest: Path) -> Path:
    """Write a minimal root filesystem tar: busybox-static, its applet links, /etc basics."""
    applets = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True).stdout.split()
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n",
        "etc/group": "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nstaff:x:50:app\n",
    }
    with tarfile.open(dest, "w") as tar:
        for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "root", "home", "home/app", "proc", "sys", "dev", "var"]:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            if d == "home/app":
                info.uid = info.gid = 1000
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in applets:
            name = applet.lstrip("/")
            if name == "bin/busybox":
                continue
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = "/bin/busybox"
            tar.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return dest


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory) -> Path:
    """Path of a busybox root filesystem tarball, built once per test session."""
    return build_busybox_rootfs_tar(tmp_path_factory.mktemp("images") / "busybox.tar")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory, busybox_tar) -> Path:
    """The same root filesystem unpacked into a directory (for tests of the shim alone)."""
    root = tmp_path_factory.mktemp("busybox-rootfs")
    with tarfile.open(busybox_tar) as tar:
        tar.extractall(root, filter="fully_trusted")
    return root


def mounts_containing(fragment: str) -> list[str]:
    """Mount points whose source or target mentions `fragment` (used by leak checks)."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if fragment in line]
