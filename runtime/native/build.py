"""Build the native parts: the shim executable and the cffi extension `_native`.

Run by `make native`. Idempotent: each output is rebuilt only when a source is newer, and is
written under a temporary name and renamed, so an interrupted build never leaves a broken file.
Both are compiled with the compiler cffi uses (Python's configured CC), so one toolchain suffices.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIM = HERE / "flotilla-shim"
SHIM_SOURCES = ["shim.c", "container.c", "conf.c", "jsonlog.c", "util.c"]
SHIM_HEADERS = ["shim.h"]
CFLAGS = ["-O2", "-Wall", "-Wextra", "-D_FILE_OFFSET_BITS=64"]

# The cffi extension: only what Python lacks and the runtime needs in-process.
NATIVE_CDEF = """
int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data);
int umount2(const char *target, int flags);
int flotilla_openat2(int dirfd, const char *path, int flags, int mode, unsigned long long resolve);
"""
NATIVE_SOURCE = """
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

static int flotilla_openat2(int dirfd, const char *path, int flags, int mode, unsigned long long resolve) {
    struct open_how how = {.flags = (unsigned long long)flags, .mode = (unsigned long long)mode, .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}
"""


def compiler() -> list[str]:
    """The C compiler Python was configured with, which is what cffi (setuptools) invokes."""
    return shlex.split(sysconfig.get_config_var("CC") or "cc")


def newer(output: Path, inputs: list[Path]) -> bool:
    """True when `output` exists and is at least as new as every input."""
    if not output.exists():
        return False
    mtime = output.stat().st_mtime
    return all(p.stat().st_mtime <= mtime for p in inputs)


def build_shim() -> None:
    """Compile the shim, statically when glibc allows, so an idle shim costs little memory."""
    inputs = [HERE / s for s in SHIM_SOURCES + SHIM_HEADERS] + [Path(__file__).resolve()]
    if newer(SHIM, inputs):
        return
    tmp = SHIM.with_name(SHIM.name + ".tmp")
    base = compiler() + CFLAGS + ["-o", str(tmp)] + [str(HERE / s) for s in SHIM_SOURCES]
    try:
        subprocess.run(base + ["-static"], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as static_err:
        print(f"static link failed, building a dynamic shim:\n{static_err.stderr}", file=sys.stderr)
        subprocess.run(base, check=True)
    os.replace(tmp, SHIM)


def build_native() -> None:
    """Compile `flotilla.runtime.native._native` in place (next to this file)."""
    import cffi

    existing = list(HERE.glob("_native*.so"))
    if existing and newer(existing[0], [Path(__file__).resolve()]):
        return
    ffi = cffi.FFI()
    ffi.cdef(NATIVE_CDEF)
    ffi.set_source("flotilla.runtime.native._native", NATIVE_SOURCE)
    with tempfile.TemporaryDirectory(prefix="flotilla-native-") as tmp:
        built = Path(ffi.compile(tmpdir=tmp, verbose=False))
        target = HERE / built.name
        staged = target.with_name(target.name + ".tmp")
        staged.write_bytes(built.read_bytes())
        staged.chmod(0o755)
        os.replace(staged, target)
    for old in existing:
        if old.name != target.name:
            old.unlink()


def main() -> None:
    build_shim()
    build_native()


if __name__ == "__main__":
    main()
