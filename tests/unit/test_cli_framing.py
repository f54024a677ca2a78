"""The CLI socket: framing, the agent's listener (hostile input included) and swarmctl's client.

The listener serves a small Runtime servicer here (a subclass of the generated base class, so
every RPC it does not define answers UNIMPLEMENTED exactly as on the gRPC server); the real
agent's servicer behind it is exercised by the e2e CLI tests, which use this socket by default.
"""
from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from flotilla.agent.cli_listener import CliListener
from flotilla.proto import framing
from flotilla.proto import runtime_pb2 as pb
from flotilla.proto import runtime_pb2_grpc as pb_grpc
from flotilla.proto.framing import StatusCode
from flotilla.swarmctl.messages import Messages, load_upb, runtime_messages, serialized_descriptor
from flotilla.swarmctl.socket_client import CallError, SocketMethods

REPO = Path(__file__).resolve().parents[2]


class Servicer(pb_grpc.RuntimeServicer):
    """Just enough of the Runtime service to drive every streaming kind and failure path."""

    def __init__(self) -> None:
        self.ended = threading.Event()

    async def ListContainers(self, request, context):
        return pb.ListContainersResponse(containers=[pb.ContainerInfo(id="all" if request.all else "running")])

    async def InspectContainer(self, request, context):
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no such container: {request.ref}", (("exit-code", "125"),))

    async def Top(self, request, context):
        raise RuntimeError("the disk caught fire")

    async def Logs(self, request, context):
        try:
            for i in range(3):
                yield pb.LogEntry(stream="stdout", data=f"line {i}\n".encode())
            if request.follow:
                await asyncio.Event().wait()  # until the client goes away
        finally:
            self.ended.set()

    async def CopyTo(self, request_iterator, context):
        requests = aiter(request_iterator)
        first = await anext(requests)
        data = b"".join([msg.data async for msg in requests])
        if first.header.path != "/dst" or data != b"abc" * 1000:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "wrong upload")
        return pb.Empty()

    async def Exec(self, request_iterator, context):
        requests = aiter(request_iterator)
        first = await anext(requests)
        yield pb.StreamOutput(exec_id=first.exec.ref)
        async for msg in requests:
            if msg.WhichOneof("item") == "close_stdin":
                break
            yield pb.StreamOutput(stdout=msg.stdin.upper())
        yield pb.StreamOutput(exit_code=7)


@pytest.fixture
def served(tmp_path, unique):
    """(servicer, CLI socket path): a CliListener on its own event loop in a thread."""
    path = tmp_path / f"agent-{unique}.sock.cli"
    servicer = Servicer()
    loop = asyncio.new_event_loop()
    listener = CliListener(servicer, pb.DESCRIPTOR.services_by_name["Runtime"], pb, path)
    loop.run_until_complete(listener.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield servicer, path
    asyncio.run_coroutine_threadsafe(listener.close(0.5), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
    assert not path.exists()


def raw_call(path: Path, data: bytes, shut_write: bool = True) -> list[tuple[int, bytes]]:
    """Send raw bytes; every frame the listener answers with until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    frames = []
    while received:
        length, kind = framing.HEADER.unpack_from(received)
        frames.append((kind, received[framing.HEADER.size:framing.HEADER.size + length]))
        received = received[framing.HEADER.size + length:]
    return frames


def status_of(frames) -> tuple[StatusCode, str]:
    kind, payload = frames[-1]
    assert kind == framing.STATUS
    code, details, _ = framing.decode_status(payload)
    return code, details


# -- framing ----------------------------------------------------------------------------
def test_frames_and_statuses_round_trip():
    frame = framing.encode(framing.MESSAGE, b"xyz")
    assert framing.parse_header(frame[:framing.HEADER.size]) == (framing.MESSAGE, 3)
    trailers = (("exit-code", "127"), ("error-source", "registry"))
    status = framing.encode_status(StatusCode.FAILED_PRECONDITION, "exec: \"x\": not found ü", trailers)
    assert framing.decode_status(status[framing.HEADER.size:]) == (
        StatusCode.FAILED_PRECONDITION, "exec: \"x\": not found ü", trailers)
    assert framing.cli_socket_path("/run/flotilla/agent.sock") == "/run/flotilla/agent.sock.cli"


@pytest.mark.parametrize("header, message", [
    (struct.pack(">IB", framing.MAX_PAYLOAD + 1, framing.MESSAGE), "over the limit"),
    (struct.pack(">IB", 4, 99), "unknown frame kind 99"),
])
def test_hostile_headers_are_refused(header, message):
    with pytest.raises(framing.FrameError, match=message):
        framing.parse_header(header)


@pytest.mark.parametrize("payload", [b"", b"\x00\x00\x00\x63", b"\x00\x00\x00\x00\x00\x00\x00\x09ab",
                                     b"\x00\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x00\x01k", b"\x00\x00\x00\x00"
                                     b"\x00\x00\x00\x02\xff\xfe"])
def test_malformed_statuses_are_refused(payload):
    with pytest.raises(framing.FrameError):
        framing.decode_status(payload)


# -- the listener and the client ----------------------------------------------------------
def test_unary_call_abort_and_trailers(served):
    _, path = served
    stub = SocketMethods(str(path), pb)
    assert stub.ListContainers(pb.ListContainersRequest(all=True)).containers[0].id == "all"
    with pytest.raises(CallError) as err:
        stub.InspectContainer(pb.ContainerRef(ref="web"))
    assert err.value.code() == StatusCode.NOT_FOUND and err.value.code().name == "NOT_FOUND"
    assert err.value.details() == "no such container: web"
    assert err.value.trailing_metadata() == (("exit-code", "125"),)


def test_unimplemented_and_unexpected_failures_are_one_line(served):
    _, path = served
    stub = SocketMethods(str(path), pb)
    with pytest.raises(CallError) as err:
        stub.ListImages(pb.Empty())  # the generated base class: set_code(UNIMPLEMENTED), raise
    assert (err.value.code(), err.value.details()) == (StatusCode.UNIMPLEMENTED, "Method not implemented!")
    with pytest.raises(CallError) as err:
        stub.Top(pb.ContainerRef(ref="x"))
    assert (err.value.code(), err.value.details()) == (StatusCode.INTERNAL, "internal error: the disk caught fire")
    assert stub.ListContainers(pb.ListContainersRequest()).containers[0].id == "running"  # still serving


def test_server_stream_and_cancel(served):
    servicer, path = served
    stub = SocketMethods(str(path), pb)
    assert [e.data for e in stub.Logs(pb.LogsRequest(ref="x"))] == [b"line 0\n", b"line 1\n", b"line 2\n"]
    for consumed in (1, 3):  # the client leaves while the handler yields, or while it waits
        servicer.ended.clear()
        stream = stub.Logs(pb.LogsRequest(ref="x", follow=True))
        assert [next(stream).data for _ in range(consumed)][-1] == f"line {consumed - 1}\n".encode()
        stream.cancel()
        with pytest.raises(CallError) as err:
            list(stream)
        assert err.value.code() == StatusCode.CANCELLED
        assert servicer.ended.wait(5), "closing the connection did not end the handler"


def test_client_stream_and_bidi(served):
    _, path = served
    stub = SocketMethods(str(path), pb)
    upload = [pb.CopyToRequest(header=pb.CopyToHeader(ref="c", path="/dst"))]
    upload += [pb.CopyToRequest(data=b"abc" * 100) for _ in range(10)]
    assert stub.CopyTo(iter(upload)) == pb.Empty()
    requests = [pb.StreamInput(exec=pb.ExecStart(ref="e1")), pb.StreamInput(stdin=b"hi"),
                pb.StreamInput(close_stdin=True)]
    outputs = [o for o in stub.Exec(iter(requests))]
    assert [o.WhichOneof("item") for o in outputs] == ["exec_id", "stdout", "exit_code"]
    assert (outputs[0].exec_id, outputs[1].stdout, outputs[2].exit_code) == ("e1", b"HI", 7)


def test_socket_is_owner_and_group_only(served):
    _, path = served
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging socket left


@pytest.mark.parametrize("data, code, message", [
    (framing.encode(framing.CALL, b"Nope") + framing.encode(framing.MESSAGE), StatusCode.UNIMPLEMENTED,
     "unknown method 'Nope' of the Runtime service"),
    (framing.encode(framing.MESSAGE, b"x"), StatusCode.INVALID_ARGUMENT, "the first frame must be CALL"),
    (framing.encode(framing.CALL, b"x" * 500), StatusCode.INVALID_ARGUMENT, "the first frame must be CALL"),
    (struct.pack(">IB", 1 << 31, framing.CALL), StatusCode.INVALID_ARGUMENT, "over the limit"),
    (struct.pack(">IB", 5, 77) + b"12345", StatusCode.INVALID_ARGUMENT, "unknown frame kind 77"),
    (struct.pack(">IB", 100, framing.CALL) + b"Top", StatusCode.INVALID_ARGUMENT, "truncated frame: 3 of 100 bytes"),
    (b"\x00\x00", StatusCode.INVALID_ARGUMENT, "truncated frame header"),
    (framing.encode(framing.CALL, b"Top") + framing.encode(framing.MESSAGE, b"\xff\xff\xff"),
     StatusCode.INVALID_ARGUMENT, "cannot parse the Top request as ContainerRef"),
    (framing.encode(framing.CALL, b"Top") + framing.encode(framing.HALF_CLOSE), StatusCode.INVALID_ARGUMENT,
     "expected a MESSAGE frame, got HALF_CLOSE"),
    (framing.encode(framing.CALL, b"CopyTo") + struct.pack(">IB", 1 << 30, framing.MESSAGE),
     StatusCode.INVALID_ARGUMENT, "over the limit"),
])
def test_hostile_input_gets_one_line_and_the_listener_keeps_serving(served, data, code, message):
    _, path = served
    got_code, details = status_of(raw_call(path, data))
    assert got_code == code and message in details and "\n" not in details
    stub = SocketMethods(str(path), pb)
    assert stub.ListContainers(pb.ListContainersRequest(all=True)).containers[0].id == "all"


def test_a_client_that_leaves_early_costs_nothing(served):
    _, path = served
    for data in (b"", framing.encode(framing.CALL, b"Logs")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            s.sendall(data)
    assert SocketMethods(str(path), pb).ListContainers(pb.ListContainersRequest()).containers[0].id == "running"


def test_an_absent_agent_is_unavailable(tmp_path, unique):
    with pytest.raises(CallError) as err:
        SocketMethods(str(tmp_path / f"none-{unique}.sock.cli"), pb).ListContainers(pb.ListContainersRequest())
    assert err.value.code() == StatusCode.UNAVAILABLE


# -- swarmctl on the fast path: no grpc ---------------------------------------------------
def test_swarmctl_never_imports_grpc_on_the_cli_socket(served):
    _, path = served
    grpc_path = str(path)[:-len(framing.SOCKET_SUFFIX)]
    script = ("import sys\n"
              "from flotilla.swarmctl.main import run_command\n"
              f"code = run_command(['-H', 'unix://{grpc_path}', 'ps', '-a'])\n"
              f"code2 = run_command(['-H', 'unix://{grpc_path}', 'top', 'x'])\n"
              "assert 'grpc' not in sys.modules, sorted(m for m in sys.modules if 'grpc' in m)\n"
              "assert 'flotilla.proto.runtime_pb2' not in sys.modules\n"
              "sys.exit(code * 10 + code2)\n")
    env = {k: v for k, v in os.environ.items() if k != "FLOTILLA_TRANSPORT"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 1, res.stderr  # ps worked (0), top failed with the daemon's line (1)
    assert "CONTAINER ID" in res.stdout
    assert res.stderr == "Error response from daemon: internal error: the disk caught fire\n"


# -- messages made by upb ---------------------------------------------------------------
def test_upb_messages_match_the_generated_module():
    source = (REPO / "proto" / "runtime_pb2.py").read_text()
    assert serialized_descriptor(source) == pb.DESCRIPTOR.serialized_pb
    lean = runtime_messages()
    assert isinstance(lean, Messages)  # upb is this venv's backend
    for name in pb.DESCRIPTOR.message_types_by_name:
        assert getattr(lean, name).DESCRIPTOR.full_name == getattr(pb, name).DESCRIPTOR.full_name
    spec = pb.ContainerSpec(image="bb", cmd=["sh", "-c", "x"], labels={"a": "b"}, cpus=1.5,
                            mounts=[pb.Mount(source="/s", destination="/d", readonly=True)])
    ours = lean.StreamInput(run=lean.RunStart(spec=lean.ContainerSpec.FromString(spec.SerializeToString())))
    theirs = pb.StreamInput(run=pb.RunStart(spec=spec))
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    assert ours.WhichOneof("item") == "run" and ours.run.spec.labels["a"] == "b"


def test_no_descriptor_in_the_source_means_the_generated_module():
    assert serialized_descriptor("x = 1\n") is None and load_upb("x = 1\n") is None
