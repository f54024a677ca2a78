"""References, memory strings, signals, spec validation and Docker's CMD/ENTRYPOINT/ENV merging."""
from __future__ import annotations

import pytest

from flotilla.runtime.containers import resolve_process
from flotilla.runtime.errors import InvalidArgument
from flotilla.runtime.images import DEFAULT_PATH, apply_changes
from flotilla.runtime.reference import parse_reference
from flotilla.runtime.spec import ContainerSpec, Mount, RestartPolicy, parse_memory, parse_signal, validate_spec

CID = "ab" * 32


@pytest.mark.parametrize("text,expected", [
    ("busybox", "busybox:latest"),
    ("busybox:1.36", "busybox:1.36"),
    ("library/busybox", "library/busybox:latest"),
    ("localhost:5000/team/app:v1.2-rc_3", "localhost:5000/team/app:v1.2-rc_3"),
    ("registry.example.com/a/b", "registry.example.com/a/b:latest"),
    ("a__b.c-d", "a__b.c-d:latest"),
])
def test_reference_parsing(text, expected):
    assert str(parse_reference(text)) == expected


def test_reference_with_digest():
    ref = parse_reference("app@sha256:" + "0" * 64)
    assert ref.name == "app" and ref.digest == "sha256:" + "0" * 64 and str(ref) == "app@sha256:" + "0" * 64


@pytest.mark.parametrize("text", ["", "UPPER", "bad name", "a:b:c", "app:", "app:-x", "-app", "app@sha256:12", "a//b", "x" * 256])
def test_bad_references_are_refused_with_one_line(text):
    with pytest.raises(InvalidArgument) as e:
        parse_reference(text)
    assert "invalid reference format" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text,expected", [
    ("1024", 1024), ("10b", 10), ("1k", 1024), ("512m", 512 << 20), ("512M", 512 << 20), ("512mb", 512 << 20),
    ("64MiB", 64 << 20), ("1.5g", 3 << 29), ("2G", 2 << 30), ("1t", 1 << 40),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "m", "12x", "-5m", "1.2.3g", "ten"])
def test_parse_memory_refuses_garbage(text):
    with pytest.raises(InvalidArgument, match="invalid memory size"):
        parse_memory(text)


def test_parse_signal():
    assert parse_signal("KILL") == 9 and parse_signal("SIGTERM") == 15 and parse_signal("sigusr1") == 10
    assert parse_signal("9") == 9 and parse_signal(15) == 15
    for bad in ("NOPE", "0", "999", ""):
        with pytest.raises(InvalidArgument, match="invalid signal"):
            parse_signal(bad)


@pytest.mark.parametrize("spec,message", [
    (ContainerSpec("i", name="-bad"), "invalid container name"),
    (ContainerSpec("i", name="a"), "invalid container name"),
    (ContainerSpec("i", memory=1024), "minimum memory limit"),
    (ContainerSpec("i", cpus=-1), "range of CPUs"),
    (ContainerSpec("i", cpus=1000), "range of CPUs"),
    (ContainerSpec("i", cpu_shares=1), "cpu shares"),
    (ContainerSpec("i", pids_limit=-2), "pids limit"),
    (ContainerSpec("i", network_mode=""), "network mode is empty"),
    (ContainerSpec("i", env=["NOVALUE"]), "expected NAME=value"),
    (ContainerSpec("i", workdir="rel"), "absolute path"),
    (ContainerSpec("i", stop_signal="SIGNOPE"), "invalid signal"),
    (ContainerSpec("i", restart_policy=RestartPolicy("sometimes")), "invalid restart policy"),
    (ContainerSpec("i", restart_policy=RestartPolicy("always", 3)), "maximum retry count"),
    (ContainerSpec("i", restart_policy=RestartPolicy("on-failure", -1)), "cannot be negative"),
    (ContainerSpec("i", restart_policy=RestartPolicy("always"), auto_remove=True), "auto-remove"),
    (ContainerSpec("i", mounts=[Mount("v", "relative")]), "must be absolute"),
    (ContainerSpec("i", mounts=[Mount("v", "/")]), "can't be '/'"),
    (ContainerSpec("i", mounts=[Mount("bad name", "/x")]), "invalid characters"),
    (ContainerSpec("i", mounts=[Mount("va", "/x"), Mount("vb", "/x/")]), "duplicate mount point"),
])
def test_validate_spec_refuses(spec, message):
    with pytest.raises(InvalidArgument, match=message):
        validate_spec(spec)


def test_validate_spec_accepts_a_full_spec():
    validate_spec(ContainerSpec("i", name="web.1_a-b", cmd=["sh"], env=["A=1", "B="], workdir="/w", memory=64 << 20,
                                cpus=0.5, cpu_shares=512, pids_limit=10, mounts=[Mount("/tmp", "/t", True), Mount("v1", "/v")],
                                restart_policy=RestartPolicy("on-failure", 3), network_mode="host", stop_signal="SIGINT"))


IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["default", "args"], "Env": ["PATH=/img/bin", "A=image", "B=image"],
         "WorkingDir": "/srv", "User": "app", "StopSignal": "SIGQUIT"}


def test_image_defaults_apply():
    p = resolve_process(ContainerSpec("i"), IMAGE, CID)
    assert p["args"] == ["/entry", "default", "args"]
    assert p["cwd"] == "/srv" and p["user"] == "app" and p["stop_signal"] == "SIGQUIT"
    assert p["env"] == [f"HOSTNAME={CID[:12]}", "PATH=/img/bin", "A=image", "B=image"]


def test_cmd_replaces_image_cmd_and_keeps_entrypoint():
    assert resolve_process(ContainerSpec("i", cmd=["x"]), IMAGE, CID)["args"] == ["/entry", "x"]


def test_entrypoint_resets_image_cmd():
    assert resolve_process(ContainerSpec("i", entrypoint=["/other"]), IMAGE, CID)["args"] == ["/other"]
    assert resolve_process(ContainerSpec("i", entrypoint=["/other"], cmd=["y"]), IMAGE, CID)["args"] == ["/other", "y"]


def test_empty_entrypoint_clears_it():
    assert resolve_process(ContainerSpec("i", entrypoint=[], cmd=["sh"]), IMAGE, CID)["args"] == ["sh"]
    with pytest.raises(InvalidArgument, match="no command specified"):
        resolve_process(ContainerSpec("i", entrypoint=[]), IMAGE, CID)


def test_env_overrides_by_name_and_path_default():
    p = resolve_process(ContainerSpec("i", env=["B=spec", "C=new"], tty=True, hostname="h1", user="0", workdir="/w",
                                      stop_signal="SIGINT"), IMAGE, CID)
    assert p["env"] == ["HOSTNAME=h1", "TERM=xterm", "PATH=/img/bin", "A=image", "B=spec", "C=new"]
    assert p["user"] == "0" and p["cwd"] == "/w" and p["stop_signal"] == "SIGINT"
    bare = resolve_process(ContainerSpec("i", cmd=["sh"]), {}, CID)
    assert bare["env"][0] == DEFAULT_PATH and bare["cwd"] == "/" and bare["user"] == ""


def test_apply_changes():
    cfg = apply_changes({"Env": ["PATH=/bin", "A=1"]}, {
        "CMD": "echo hi", "entrypoint": ["/e"], "Env": {"A": "2", "B": "3"}, "WORKDIR": "/app", "User": "app",
        "Label": {"k": "v"}, "EXPOSE": ["80", "53/udp"], "StopSignal": "SIGINT"})
    assert cfg == {"Cmd": ["/bin/sh", "-c", "echo hi"], "Entrypoint": ["/e"], "Env": ["PATH=/bin", "A=2", "B=3"],
                   "WorkingDir": "/app", "User": "app", "Labels": {"k": "v"},
                   "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "StopSignal": "SIGINT"}
    for bad in ({"Volume": "/x"}, {"Cmd": 5}, {"WorkingDir": "rel"}, {"Env": ["X"]}, {"StopSignal": "NOPE"},
                {"ExposedPorts": ["99999"]}, {"Labels": ["x"]}):
        with pytest.raises(InvalidArgument):
            apply_changes({}, bad)
