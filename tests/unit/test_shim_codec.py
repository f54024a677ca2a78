"""shim.conf encoding and validation, the attach frame codec, the exit file: no root needed."""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flotilla.runtime import shim
from flotilla.runtime.shim import BindMount, FrameDecoder, Rlimit, ShimConfig, ShimError


def records(data: bytes) -> list[tuple[str, str]]:
    assert data.endswith(b"\0")
    return [tuple(r.decode().split("=", 1)) for r in data[:-1].split(b"\0")]


def container(**kw) -> ShimConfig:
    kw.setdefault("args", ["x"])
    return ShimConfig(rootfs="/r", **kw)


def test_defaults_are_dockers():
    recs = records(container(args=["sh"]).encode())
    keys = [k for k, _ in recs]
    assert ("arg", "sh") in recs
    assert ("namespaces", "pid,mnt,uts,ipc,net,cgroup") in recs
    assert ("caps", "0,1,3,4,5,6,7,8,10,13,18,27,29,31") in recs
    assert ("no_new_privs", "1") in recs
    assert keys.count("masked") == len(shim.DEFAULT_MASKED_PATHS)
    assert keys.count("readonly_path") == len(shim.DEFAULT_READONLY_PATHS)
    assert sum(1 << c for c in shim.DEFAULT_CAPS) == 0xA80425FB  # CapEff of a default Docker container


def test_full_config_round_trips_in_order():
    cfg = ShimConfig(
        args=["sh", "-c", "echo a=b"], env=["A=1", "B=x=y"], cwd="/w", user="app:staff", hostname="h",
        lowerdir=["/l1", "/l2"], upperdir="/u", workdir="/wk", rootfs="/r", readonly=True,
        namespaces=["pid", "mnt"], netns="/run/netns/x", cgroups=["/sys/fs/cgroup/pids/x"],
        mounts=[BindMount("/src", "/dst", readonly=True), BindMount("/a", "/b", recursive=False)],
        masked=["/proc/kcore"], readonly_paths=[], rlimits=[Rlimit("NOFILE", 10, 20)], caps=[5, 0, 5],
        tty=True, stdin=True, wait_attach=True, log="/log", pid=42, oom_score_adj=-500,
    )
    recs = records(cfg.encode())
    assert recs[:3] == [("arg", "sh"), ("arg", "-c"), ("arg", "echo a=b")]
    d = dict(recs)
    assert d["lowerdir"] == "/l1:/l2"
    assert d["mount"] == "/a\t/b\trw"  # the last one; both are present
    assert ("mount", "/src\t/dst\tro,rbind") in recs
    assert d["rlimit"] == "NOFILE:10:20"
    assert d["caps"] == "0,5"
    assert d["env"] == "B=x=y"
    for key in ("readonly", "tty", "stdin", "wait_attach", "no_new_privs"):
        assert d[key] == "1"
    assert d["pid"] == "42" and d["oom_score_adj"] == "-500"


def test_caps_none_keeps_all_and_empty_drops_all():
    assert "caps" not in dict(records(container(caps=None).encode()))
    assert dict(records(container(caps=[]).encode()))["caps"] == ""


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(args=[]), "args"),
    (dict(args=["a\0b"]), "NUL"),
    (dict(env=["NOVALUE"]), "NAME=value"),
    (dict(namespaces=["pid", "mnt", "user"]), "unknown 'user'"),
    (dict(netns="/run/netns/a"), "netns"),
    (dict(namespaces=["pid", "mnt"], hostname="h"), "uts"),
    (dict(namespaces=["pid"]), "mnt namespace"),
    (dict(rootfs=None), "rootfs"),
    (dict(upperdir="/u"), "workdir"),
    (dict(caps=[64]), "caps"),
    (dict(lowerdir=["/a:b"]), "lowerdir"),
    (dict(mounts=[BindMount("rel", "/d")]), "absolute"),
    (dict(mounts=[BindMount("/s", "/d\tx")]), "tabs"),
    (dict(rlimits=[Rlimit("FILES", 1, 2)]), "unknown rlimit"),
    (dict(rlimits=[Rlimit("NOFILE", 3, 2)]), "soft"),
    (dict(oom_score_adj=2000), "oom_score_adj"),
])
def test_invalid_configs_are_rejected(kwargs, fragment):
    kw = {"args": ["x"], "rootfs": "/r", **kwargs}
    with pytest.raises(ValueError, match=fragment):
        ShimConfig(**kw).encode()


def test_exec_config_sets_up_nothing_of_its_own():
    d = records(ShimConfig.for_exec(42, ["sh"], user="app").encode())
    assert ("pid", "42") in d and ("namespaces", "") in d and ("user", "app") in d
    assert not [k for k, _ in d if k in ("masked", "readonly_path", "rootfs")]


def test_init_is_a_flag_of_containers_only():
    assert ("init", "1") in records(container(init=True).encode())
    assert "init" not in dict(records(container().encode()))
    with pytest.raises(ValueError, match="init: an exec runs under the container's init"):
        ShimConfig.for_exec(42, ["sh"], init=True).encode()


def test_unknown_field_is_an_error():
    with pytest.raises(TypeError):
        ShimConfig(args=["x"], capabilities=[1])  # type: ignore[call-arg]


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    path = tmp_path / "shim.conf"
    path.write_bytes(b"old")
    container(args=["true"]).write(path)
    assert path.read_bytes().startswith(b"arg=true\0")
    assert os.listdir(tmp_path) == ["shim.conf"]
    with pytest.raises(ValueError):
        container(args=["bad\0"]).write(path)
    assert path.read_bytes().startswith(b"arg=true\0")  # a rejected config never replaces a good one


def test_frame_layout():
    assert shim.encode_frame(shim.STDOUT, b"hi") == b"\x01\0\0\0\0\0\0\x02hi"
    assert shim.encode_frame(shim.STDIN_CLOSE) == b"\x04\0\0\0\0\0\0\0"
    assert shim.resize_payload(40, 300) == struct.pack(">HH", 40, 300)
    with pytest.raises(ValueError):
        shim.encode_frame(shim.STDIN, b"x" * (shim.MAX_FRAME + 1))


@given(st.lists(st.tuples(st.integers(0, 5), st.binary(max_size=300)), max_size=20), st.integers(1, 50))
def test_decoder_reassembles_any_split(frames, step):
    stream = b"".join(shim.encode_frame(k, p) for k, p in frames)
    dec, got = FrameDecoder(), []
    for i in range(0, len(stream), step):
        got += dec.feed(stream[i:i + step])
    assert got == frames
    assert dec.pending == 0


def test_read_exit(tmp_path):
    path = tmp_path / "exit"
    path.write_text("code=137\nsignal=9\nfinished=2026-11-22T06:00:00.5Z\n")
    assert shim.read_exit(path) == shim.ExitStatus(137, 9, "2026-11-22T06:00:00.5Z")
    path.write_text("code=x\n")
    with pytest.raises(ValueError, match="malformed"):
        shim.read_exit(path)
    with pytest.raises(FileNotFoundError):
        shim.read_exit(tmp_path / "missing")


def test_shim_rejects_a_bad_conf_before_doing_anything(tmp_path):
    """The C parser's own validation (needs no root: it fails before any privileged call)."""
    cases = {
        b"arg=true\0bogus=1\0": 'shim.conf: unknown key "bogus"',
        b"arg=true\0cwd=/a\0cwd=/b\0": 'shim.conf: key "cwd" given twice',
        b"arg=true\0tty=yes\0": 'shim.conf: tty must be 0 or 1, got "yes"',
        b"arg=true\0namespaces=pid,user\0": 'shim.conf: unknown namespace "user" (use pid,mnt,uts,ipc,net,cgroup)',
        b"arg=true\0caps=1,x\0": 'shim.conf: caps must be comma-separated numbers 0-63, got "1,x"',
        b"cwd=/\0": 'shim.conf: no command (at least one "arg" record is needed)',
        b"arg=true": "shim.conf: last record is not NUL-terminated (truncated file?)",
        b"arg=true\0rootfs=/r\0namespaces=pid\0": "shim.conf: a container needs the mnt namespace and a rootfs (it is mounted inside)",
        b"arg=true\0rootfs=/r\0namespaces=mnt\0hostname=x\0": "shim.conf: hostname needs the uts namespace (it would rename the host)",
        b"arg=true\0rootfs=/r\0namespaces=mnt,net\0netns=/x\0": "shim.conf: netns joins a network namespace: leave net out of namespaces",
        b"arg=true\0rootfs=/r\0namespaces=mnt\0pid=1\0": "shim.conf: pid is only for exec mode",
    }
    for data, message in cases.items():
        (tmp_path / "shim.conf").write_bytes(data)
        with pytest.raises(ShimError) as e:
            shim.run(tmp_path)
        assert (e.value.exit_code, e.value.message) == (125, message)
        assert shim.read_exit(tmp_path / "exit").code == 125


def test_missing_bundle_is_reported(tmp_path):
    with pytest.raises(ShimError, match="no-such-dir: No such file or directory"):
        shim.run(tmp_path / "no-such-dir")


def test_exec_id_is_validated(tmp_path):
    with pytest.raises(ValueError, match="exec id"):
        shim.exec(tmp_path, "../x")
