"""The gRPC server on its own loop (manager/rpc_thread.py): handlers still run on the main
loop with results, streams, aborts and cancellation carried across, and a `direct` method is
answered while the main loop is blocked (what keeps heartbeats alive during bulk work)."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import types

import grpc
import pytest

from flotilla.manager.rpc_thread import RpcThread, bridged
from flotilla.proto import dispatcher_pb2 as dpb
from flotilla.proto import dispatcher_pb2_grpc as dgrpc

DISPATCHER = dpb.DESCRIPTOR.services_by_name["Dispatcher"]
pytestmark = pytest.mark.timeout(60)


class Recorder(dgrpc.DispatcherServicer):
    """A servicer that records on which thread each method ran and what became of its stream."""

    def __init__(self) -> None:
        self.threads: dict[str, str] = {}
        self.stream_ended = asyncio.Event()

    async def Heartbeat(self, request, context):
        self.threads["Heartbeat"] = threading.current_thread().name
        if request.session_id == "bad":
            await context.abort(grpc.StatusCode.NOT_FOUND, "session 'bad' is unknown")
        return dpb.HeartbeatResponse()

    async def UpdateTaskStatus(self, request, context):
        self.threads["UpdateTaskStatus"] = threading.current_thread().name
        if request.session_id == "bad":
            await context.abort(grpc.StatusCode.NOT_FOUND, "session 'bad' is unknown")
        if request.session_id == "boom":
            raise RuntimeError("boom")
        return dpb.UpdateTaskStatusResponse()

    async def Session(self, request, context):
        self.threads["Session"] = threading.current_thread().name
        if request.node_id == "bad":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "node 'bad' refused")
        try:
            for i in range(3):
                yield dpb.SessionMessage(session_id=f"s{i}")
            await asyncio.Event().wait()  # held open, as a real session is
        finally:
            self.stream_ended.set()

    async def Assignments(self, request, context):
        yield dpb.AssignmentsMessage(applies_to=1)


@contextlib.asynccontextmanager
async def served(unique: str):
    main = asyncio.get_running_loop()
    rpc = RpcThread(name=f"grpc-{unique}")
    rpc.start()
    servicer = Recorder()
    holder: dict = {}

    async def serve() -> None:
        server = grpc.aio.server()
        dgrpc.add_DispatcherServicer_to_server(bridged(servicer, DISPATCHER, main, direct=frozenset({"Heartbeat"})), server)
        holder["port"] = server.add_insecure_port("127.0.0.1:0")
        holder["server"] = server
        await server.start()

    await rpc.run(serve())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{holder['port']}")
    try:
        yield servicer, dgrpc.DispatcherStub(channel), f"127.0.0.1:{holder['port']}"
    finally:
        await channel.close()
        await rpc.run(holder["server"].stop(grace=None))
        rpc.stop()
    assert not any(t.name == f"grpc-{unique}" for t in threading.enumerate())


def test_unary_runs_on_main_loop_and_aborts_carry_their_code(unique: str) -> None:
    async def main() -> None:
        async with served(unique) as (servicer, stub, addr):
            await stub.UpdateTaskStatus(dpb.UpdateTaskStatusRequest(session_id="ok"))
            assert servicer.threads["UpdateTaskStatus"] == threading.current_thread().name
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.UpdateTaskStatus(dpb.UpdateTaskStatusRequest(session_id="bad"))
            assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details() == "session 'bad' is unknown"
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.UpdateTaskStatus(dpb.UpdateTaskStatusRequest(session_id="boom"))
            assert e.value.code() == grpc.StatusCode.UNKNOWN

    asyncio.run(main())


def test_direct_method_answers_while_main_loop_is_blocked(unique: str) -> None:
    async def main() -> None:
        async with served(unique) as (servicer, stub, addr):
            answered = threading.Event()
            errors: list[BaseException] = []

            def heartbeat() -> None:
                try:
                    with grpc.insecure_channel(addr) as ch:
                        dgrpc.DispatcherStub(ch).Heartbeat(dpb.HeartbeatRequest(session_id="x"), timeout=30)
                except BaseException as e:  # noqa: BLE001 - reported by the test
                    errors.append(e)
                answered.set()

            client = threading.Thread(target=heartbeat)
            client.start()
            # The main loop is blocked (not awaiting) until the heartbeat was answered.
            assert answered.wait(30), "the heartbeat waited for the blocked main loop"
            client.join()
            assert not errors
            assert servicer.threads["Heartbeat"] != threading.current_thread().name

    asyncio.run(main())


def test_stream_messages_in_order_and_client_cancel_closes_the_generator(unique: str) -> None:
    async def main() -> None:
        async with served(unique) as (servicer, stub, addr):
            call = stub.Session(dpb.SessionRequest(node_id="n1"))
            got = [(await call.read()).session_id for _ in range(3)]
            assert got == ["s0", "s1", "s2"]
            assert servicer.threads["Session"] == threading.current_thread().name
            call.cancel()
            await asyncio.wait_for(servicer.stream_ended.wait(), 30)  # its finally ran (a session is closed there)

    asyncio.run(main())


def test_stream_abort_before_first_message(unique: str) -> None:
    async def main() -> None:
        async with served(unique) as (servicer, stub, addr):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                async for _ in stub.Session(dpb.SessionRequest(node_id="bad")):
                    pass
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE and e.value.details() == "node 'bad' refused"

    asyncio.run(main())


def test_client_stream_is_read_by_a_handler_on_the_main_loop(unique: str) -> None:
    """Client streaming (the log broker's PublishLogs is one): the handler on the main loop
    iterates requests that the server loop reads."""
    class Counter:
        async def Publish(self, requests, context):
            seen = [r.session_id async for r in requests]
            return dpb.HeartbeatResponse(period={"seconds": len(seen)}) if seen == ["a", "b", "c"] else dpb.HeartbeatResponse()

    service = types.SimpleNamespace(methods=[types.SimpleNamespace(name="Publish", server_streaming=False, client_streaming=True)])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        rpc = RpcThread(name=f"grpc-{unique}")
        rpc.start()
        holder: dict = {}

        async def serve() -> None:
            server = grpc.aio.server()
            handler = grpc.stream_unary_rpc_method_handler(
                bridged(Counter(), service, loop).Publish, request_deserializer=dpb.HeartbeatRequest.FromString,
                response_serializer=dpb.HeartbeatResponse.SerializeToString)
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(f"test{unique}.Counter", {"Publish": handler}),))
            holder["port"] = server.add_insecure_port("127.0.0.1:0")
            holder["server"] = server
            await server.start()

        await rpc.run(serve())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{holder['port']}") as channel:
                publish = channel.stream_unary(f"/test{unique}.Counter/Publish", request_serializer=dpb.HeartbeatRequest.SerializeToString,
                                               response_deserializer=dpb.HeartbeatResponse.FromString)
                resp = await publish(iter([dpb.HeartbeatRequest(session_id=s) for s in "abc"]))
                assert resp.period.seconds == 3
        finally:
            await rpc.run(holder["server"].stop(grace=None))
            rpc.stop()

    asyncio.run(main())
