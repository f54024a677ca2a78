"""A busybox root filesystem tarball built from this machine's /bin/busybox (busybox-static).

Used by the quick start and the benchmark so that neither needs a registry or the internet.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
DIRS = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev", "var"]


def busybox_binary() -> str:
    found = shutil.which("busybox") or "/bin/busybox"
    if not Path(found).exists():
        raise FileNotFoundError("busybox is not installed: apt-get install busybox-static")
    return found


def write_busybox_tar(dest: Path) -> Path:
    """Write the rootfs tar: busybox, a symlink per applet, /etc/passwd and /etc/group."""
    busybox = busybox_binary()
    applets = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True).stdout.split()
    with tarfile.open(dest, "w") as tar:
        for d in DIRS:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            name = applet.lstrip("/")
            if name != "bin/busybox":
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, "/bin/busybox"
                tar.addfile(info)
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text), 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    return dest
