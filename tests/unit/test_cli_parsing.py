"""swarmctl's command-line parsing: Docker's flags become the right ContainerSpec message."""
from __future__ import annotations

import pytest

from flotilla.proto import runtime_pb2 as pb
from flotilla.swarmctl.changes import parse_changes
from flotilla.swarmctl.errors import CLIError
from flotilla.swarmctl.files import split_container_path
from flotilla.swarmctl.main import build_parser
from flotilla.swarmctl.runflags import container_spec, parse_env, parse_volume


def spec_for(*argv: str) -> pb.ContainerSpec:
    args = build_parser().parse_args(["run", *argv])
    return container_spec(pb, args)


def test_run_flags_map_to_spec(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nA=1\n\nB=2\n")
    spec = spec_for("-d", "--rm", "-it", "--name", "web", "-e", "C=3", "--env-file", str(env_file),
                    "-v", "/srv:/data:ro", "-v", "vol:/v", "-w", "/tmp", "-u", "app", "-h", "box",
                    "--read-only", "--network", "host", "-m", "64m", "--cpus", "0.5", "-c", "512",
                    "--pids-limit", "20", "-l", "a=b", "--stop-signal", "SIGINT", "--stop-timeout", "3", "--init",
                    "busybox", "sh", "-c", "echo hi")
    assert spec.image == "busybox" and spec.name == "web"
    assert list(spec.cmd) == ["sh", "-c", "echo hi"] and spec.cmd_set
    assert list(spec.env) == ["A=1", "B=2", "C=3"]
    assert [(m.source, m.destination, m.readonly) for m in spec.mounts] == [("/srv", "/data", True), ("vol", "/v", False)]
    assert (spec.workdir, spec.user, spec.hostname) == ("/tmp", "app", "box")
    assert spec.tty and spec.stdin_open and spec.auto_remove and spec.readonly_rootfs and spec.init
    assert not spec_for("busybox").init
    assert (spec.network_mode, spec.memory, spec.cpus, spec.cpu_shares, spec.pids_limit) == ("host", "64m", 0.5, 512, 20)
    assert dict(spec.labels) == {"a": "b"}
    assert (spec.stop_signal, spec.stop_timeout, spec.stop_timeout_set) == ("SIGINT", 3, True)
    assert not spec.entrypoint_set


def test_command_options_after_image_belong_to_the_command():
    spec = spec_for("busybox", "ls", "-l", "-a")
    assert list(spec.cmd) == ["ls", "-l", "-a"]


def test_no_command_means_image_cmd_and_empty_entrypoint_clears_it():
    spec = spec_for("--entrypoint", "", "busybox")
    assert not spec.cmd_set and spec.entrypoint_set and list(spec.entrypoint) == []
    assert list(spec_for("--entrypoint", "/bin/echo", "busybox").entrypoint) == ["/bin/echo"]


def test_restart_policy_travels_as_typed():
    assert spec_for("--restart", "on-failure:2", "busybox").restart_policy == "on-failure:2"


def test_bare_env_name_takes_the_shell_value(monkeypatch):
    monkeypatch.setenv("FROM_SHELL", "yes")
    monkeypatch.delenv("NOT_SET", raising=False)
    assert parse_env(["FROM_SHELL", "NOT_SET", "X=1"], []) == ["FROM_SHELL=yes", "X=1"]


def test_bad_volume_is_one_line_error():
    with pytest.raises(CLIError, match="SRC:DST"):
        parse_volume("/only-one-part")
    with pytest.raises(CLIError):
        parse_volume("a:b:c:d")


def test_missing_env_file_is_an_error(tmp_path):
    with pytest.raises(CLIError, match="cannot read env file"):
        parse_env([], [str(tmp_path / "missing")])


def test_global_host_flag_and_subcommands():
    args = build_parser().parse_args(["-H", "unix:///tmp/x.sock", "ps", "-aq", "--no-trunc"])
    assert args.host == "unix:///tmp/x.sock" and args.all and args.quiet and args.no_trunc
    args = build_parser().parse_args(["exec", "-it", "-e", "A=1", "-u", "app", "-w", "/", "web", "sh", "-c", "x"])
    assert args.container == "web" and args.command == ["sh", "-c", "x"] and args.interactive and args.tty
    assert build_parser().parse_args(["logs", "-f", "-t", "--tail", "5", "web"]).tail == "5"
    assert build_parser().parse_args(["kill", "-s", "HUP", "a", "b"]).containers == ["a", "b"]
    assert build_parser().parse_args(["volume", "create", "data"]).name == "data"
    assert build_parser().parse_args(["image", "import", "-", "img:1"]).reference == "img:1"


def test_changes_parse_like_dockerfile_instructions():
    changes = parse_changes(['CMD ["sh", "-c", "x"]', "ENTRYPOINT /bin/run me", "ENV A=1 B=2", "ENV C 3",
                             "WORKDIR /app", "USER app", "LABEL k=v", "EXPOSE 80 53/udp", "STOPSIGNAL SIGINT"])
    assert changes == {
        "Cmd": ["sh", "-c", "x"], "Entrypoint": ["/bin/sh", "-c", "/bin/run me"], "Env": ["A=1", "B=2", "C=3"],
        "WorkingDir": "/app", "User": "app", "Labels": {"k": "v"},
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "StopSignal": "SIGINT",
    }
    with pytest.raises(CLIError, match="not supported"):
        parse_changes(["RUN make"])


def test_container_paths_for_cp():
    assert split_container_path("web:/etc/hosts") == ("web", "/etc/hosts")
    assert split_container_path("/tmp/a:b") is None
    assert split_container_path("./x") is None
    assert split_container_path("-") is None
    assert split_container_path("plainfile") is None


def test_only_the_commands_group_is_registered():
    from flotilla.swarmctl.main import command_of

    assert command_of(["-H", "unix:///x.sock", "run", "busybox"]) == "run"
    assert command_of(["--host=unix:///x.sock", "ps", "-a"]) == "ps"
    assert command_of(["-h"]) is None
    only_run = build_parser(["run", "busybox"])
    args = only_run.parse_args(["run", "--rm", "busybox", "true"])
    assert args.rm and args.image == "busybox" and args.func.__name__ == "cmd_run"
    with pytest.raises(SystemExit):
        only_run.parse_args(["images"])  # not registered: only the containers group was
    full = build_parser(["nosuch"])  # unknown commands get the full parser (and its error)
    assert full.parse_args(["images"]).command == "images"
    assert build_parser(["volume", "ls"]).parse_args(["volume", "ls"]).command == "volume"


def test_lazy_runtime_methods_match_the_generated_stub():
    import grpc

    from flotilla.proto import runtime_pb2_grpc
    from flotilla.swarmctl.client import RuntimeMethods

    channel = grpc.insecure_channel("unix:///nonexistent/flotilla-test.sock")  # never connected
    try:
        generated, lazy = runtime_pb2_grpc.RuntimeStub(channel), RuntimeMethods(channel, pb)
        for method in pb.DESCRIPTOR.services_by_name["Runtime"].methods:
            ours, theirs = getattr(lazy, method.name), getattr(generated, method.name)
            assert type(ours) is type(theirs), method.name
            assert ours._method == theirs._method, method.name
            assert ours._request_serializer == theirs._request_serializer, method.name
            assert ours._response_deserializer == theirs._response_deserializer, method.name
        with pytest.raises(AttributeError, match="no method"):
            lazy.NoSuchMethod
    finally:
        channel.close()
