"""Device access control on cgroup v2: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE.

cgroup v2 has no devices controller; the kernel instead runs the eBPF device programs attached
to a process's cgroup (on the default hierarchy) for every open and mknod of a device node. The
containers keep CAP_MKNOD as Docker's do, so without such a program a container could create a
node for the host's disk and read it. This module turns the runtime's allowlist (the v1
`devices.allow` syntax, e.g. ``c 1:3 rwm``) into an eBPF program, loads it once, and attaches it
to each container's cgroup. The attached program lives as long as the cgroup: nothing to clean
up when the container goes.

The program (as runc's devicefilter builds it) reads the context `struct bpf_cgroup_dev_ctx`
{u32 access_type = access << 16 | type; u32 major; u32 minor} and returns 1 (allow) on the
first matching rule, 0 (deny, EPERM) when none matches.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import RuntimeFault

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine)
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2  # coexist with programs of the host's manager (systemd) on ancestors
_CGROUP2_SUPER_MAGIC = 0x63677270

_DEV_BLOCK, _DEV_CHAR = 1, 2
_ACC = {"m": 1, "r": 2, "w": 4}
_RULE_RE = re.compile(r"^([abc]) (\*|\d+):(\*|\d+) ([rwm]{1,3})$")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class DeviceRule:
    """One allowlist entry: type (None = all), major/minor (None = any), access bits."""

    kind: int | None
    major: int | None
    minor: int | None
    access: int

    @classmethod
    def parse(cls, text: str) -> "DeviceRule":
        m = _RULE_RE.match(text)
        if not m:
            raise ValueError(f"bad device rule {text!r}: expected e.g. 'c 1:3 rwm'")
        kind = {"a": None, "b": _DEV_BLOCK, "c": _DEV_CHAR}[m.group(1)]
        major = None if m.group(2) == "*" else int(m.group(2))
        minor = None if m.group(3) == "*" else int(m.group(3))
        access = sum(_ACC[c] for c in set(m.group(4)))
        return cls(kind, major, minor, access)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


# opcodes used (class | op | source)
_LDXW = 0x61    # dst = *(u32 *)(src + off)
_AND32K = 0x54  # dst &= imm (32-bit)
_RSH32K = 0x74  # dst >>= imm (32-bit)
_MOV64X = 0xBF  # dst = src
_MOV64K = 0xB7  # dst = imm
_JNEK = 0x55    # if dst != imm: pc += off
_EXIT = 0x95


def compile_rules(rules: list[DeviceRule]) -> bytes:
    """eBPF instructions allowing exactly `rules` (first match allows; no match denies).

    Registers: r2 = device type, r3 = requested access, r4 = major, r5 = minor, r1 = scratch.
    """
    prog = [
        _insn(_LDXW, 2, 1, 0), _insn(_AND32K, 2, imm=0xFFFF),
        _insn(_LDXW, 3, 1, 0), _insn(_RSH32K, 3, imm=16),
        _insn(_LDXW, 4, 1, 4),
        _insn(_LDXW, 5, 1, 8),
    ]
    for rule in rules:
        body: list[tuple] = []  # (code, dst, src, imm) of tests that jump to the next rule
        if rule.kind is not None:
            body.append((_JNEK, 2, 0, rule.kind))
        if rule.access != 7:
            # the request must be a subset of the rule's access: (r3 & ~access) == 0
            body += [(_MOV64X, 1, 3, 0), (_AND32K, 1, 0, ~rule.access & 7), (_JNEK, 1, 0, 0)]
        if rule.major is not None:
            body.append((_JNEK, 4, 0, rule.major))
        if rule.minor is not None:
            body.append((_JNEK, 5, 0, rule.minor))
        n = len(body) + 2  # the tests, then "r0 = 1; exit"
        for i, (code, dst, src, imm) in enumerate(body):
            off = n - i - 1 if code == _JNEK else 0
            prog.append(_insn(code, dst, src, off, imm))
        prog += [_insn(_MOV64K, 0, imm=1), _insn(_EXIT)]
    prog += [_insn(_MOV64K, 0, imm=0), _insn(_EXIT)]
    return b"".join(prog)


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    if _SYS_BPF is None:
        raise RuntimeFault(f"eBPF device filter: unsupported architecture {os.uname().machine}")
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def load_program(rules: list[DeviceRule]) -> int:
    """Load the program for `rules` into the kernel; returns its fd (the caller closes it)."""
    code = compile_rules(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, _BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license_))
    struct.pack_into("<I", attr, 68, _BPF_CGROUP_DEVICE)  # expected_attach_type
    try:
        return _bpf(_BPF_PROG_LOAD, attr)
    except OSError as e:
        first = e
    # again with the verifier's log, only to say why (a log that overflows fails the load itself)
    log = ctypes.create_string_buffer(1 << 16)
    struct.pack_into("<IIQ", attr, 24, 1, len(log), ctypes.addressof(log))
    try:
        os.close(_bpf(_BPF_PROG_LOAD, attr))
    except OSError:
        pass
    detail = log.value.decode(errors="replace").strip().splitlines()[-1:] or [""]
    raise RuntimeFault(f"cannot load the eBPF device filter: {first.strerror} {detail[0]}".strip())


def attach(prog_fd: int, cgroup_dir: Path) -> None:
    """Attach the program to the cgroup directory (it stays while the cgroup exists)."""
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        attr = ctypes.create_string_buffer(struct.pack("<IIII", fd, prog_fd, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI), 32)
        _bpf(_BPF_PROG_ATTACH, attr)
    except OSError as e:
        raise RuntimeFault(f"cannot attach the eBPF device filter to {cgroup_dir}: {e.strerror}") from None
    finally:
        os.close(fd)


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


def is_cgroup2(path: Path) -> bool:
    """True when `path` is on a real cgroup2 filesystem (not a directory laid out like one)."""
    buf = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        if err == errno.ENOENT:
            return False
        raise OSError(err, os.strerror(err), str(path))
    return buf.f_type == _CGROUP2_SUPER_MAGIC
