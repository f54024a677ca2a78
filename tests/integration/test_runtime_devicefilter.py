"""The eBPF device filter against the real kernel, on this hybrid host's cgroup2 mount.

A process placed in a cgroup with the program attached tries opens and mknods; the program must
allow exactly what its rules say (type, major/minor wildcards, access subsets) and deny the rest.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flotilla.runtime import devicefilter
from flotilla.runtime.devicefilter import DeviceRule

pytestmark = pytest.mark.root
UNIFIED = Path("/sys/fs/cgroup/unified")

PROBE = r"""
import os, sys
with open(sys.argv[2], "w") as f:  # join the cgroup first: the program applies from here on
    f.write(str(os.getpid()))
def attempt(what, fn):
    try:
        fn()
        print(what, "ok")
    except OSError as e:
        print(what, e.errno)
attempt("null-rw", lambda: os.close(os.open("/dev/null", os.O_RDWR)))
attempt("zero-r", lambda: os.close(os.open("/dev/zero", os.O_RDONLY)))
attempt("zero-w", lambda: os.close(os.open("/dev/zero", os.O_WRONLY)))
attempt("full-r", lambda: os.close(os.open("/dev/full", os.O_RDONLY)))
node = sys.argv[1]
attempt("mknod-b", lambda: os.mknod(node + "b", 0o600 | 0o60000, os.makedev(7, 200)))
attempt("mknod-c", lambda: os.mknod(node + "c", 0o600 | 0o20000, os.makedev(1, 7)))
"""


def test_rules_are_enforced_exactly(unique, tmp_path):
    prog = devicefilter.load_program([DeviceRule.parse(r) for r in ("c 1:3 rw", "c 1:5 r", "b *:* m")])
    cg = UNIFIED / f"flotilla-test-{unique}"
    cg.mkdir()
    try:
        devicefilter.attach(prog, cg)
        out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "node"), str(cg / "cgroup.procs")],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.close(prog)
        cg.rmdir()
    results = dict(line.split() for line in out.splitlines())
    assert results == {"null-rw": "ok", "zero-r": "ok", "zero-w": "1", "full-r": "1",
                       "mknod-b": "ok", "mknod-c": "1"}, out


def test_is_cgroup2_tells_a_real_mount_from_a_lookalike(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("memory\n")
    assert devicefilter.is_cgroup2(UNIFIED)
    assert not devicefilter.is_cgroup2(tmp_path)
    assert not devicefilter.is_cgroup2(tmp_path / "missing")


@pytest.mark.parametrize("bad", ["x 1:3 rwm", "c 1:3", "c a:3 r", "c 1:3 rwx", "c 1-3 r", ""])
def test_bad_rules_are_refused(bad):
    with pytest.raises(ValueError, match="bad device rule"):
        DeviceRule.parse(bad)
