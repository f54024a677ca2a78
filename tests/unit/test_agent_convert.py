"""The agent's translation of API messages to runtime specs, and of runtime errors to gRPC statuses."""
from __future__ import annotations

import grpc
import pytest

from flotilla.agent import convert
from flotilla.agent.errors import status_for
from flotilla.proto import runtime_pb2 as pb
from flotilla.runtime import errors


def test_spec_from_proto_parses_what_the_user_typed():
    msg = pb.ContainerSpec(image="busybox", cmd=["sh"], cmd_set=True, entrypoint_set=True, memory="1.5g",
                           restart_policy="on-failure:3", stop_timeout=0, stop_timeout_set=True,
                           mounts=[pb.Mount(source="/src", destination="/dst", readonly=True)], init=True)
    spec = convert.spec_from_proto(msg)
    assert spec.init
    assert spec.cmd == ["sh"] and spec.entrypoint == []
    assert spec.memory == 3 << 29
    assert (spec.restart_policy.name, spec.restart_policy.max_retries) == ("on-failure", 3)
    assert spec.stop_timeout == 0 and spec.stop_signal == "SIGTERM"
    assert spec.mounts[0].source == "/src" and spec.mounts[0].readonly
    unset = convert.spec_from_proto(pb.ContainerSpec(image="busybox"))
    assert unset.cmd is None and unset.entrypoint is None and unset.stop_timeout == 10
    assert unset.network_mode == "bridge" and unset.restart_policy.name == "no" and not unset.init


@pytest.mark.parametrize("text", ["always:2", "on-failure:x"])
def test_bad_restart_policy_is_invalid_argument(text):
    with pytest.raises(errors.InvalidArgument, match="restart policy"):
        convert.parse_restart_policy(text)


def test_bad_memory_is_invalid_argument():
    with pytest.raises(errors.InvalidArgument, match="memory"):
        convert.spec_from_proto(pb.ContainerSpec(image="busybox", memory="lots"))


def test_times_from_any_runtime_representation():
    assert convert.to_epoch(None) == 0.0
    assert convert.to_epoch("") == 0.0
    assert convert.to_epoch("0001-01-01T00:00:00Z") == 0.0
    assert convert.to_epoch(12.5) == 12.5
    assert convert.to_epoch("1970-01-01T00:00:01.123456789Z") == pytest.approx(1.123456)


def test_changes_json_must_be_an_object():
    assert convert.changes_from_json("") is None
    assert convert.changes_from_json('{"Cmd": ["sh"]}') == {"Cmd": ["sh"]}
    with pytest.raises(errors.InvalidArgument):
        convert.changes_from_json("[1]")


def test_error_mapping():
    assert status_for(errors.NotFound("no such container: x"))[:2] == (grpc.StatusCode.NOT_FOUND, "no such container: x")
    assert status_for(errors.Conflict("the name web is already in use"))[0] == grpc.StatusCode.ALREADY_EXISTS
    assert status_for(errors.Conflict("container is running: stop it or use -f"))[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(errors.InvalidArgument("bad"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, message, trailers = status_for(errors.StartFailed("exec: not found", 127))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and trailers == (("exit-code", "127"),)
    assert status_for(errors.Timeout("still running"))[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert status_for(ValueError("boom"))[0] == grpc.StatusCode.INTERNAL
