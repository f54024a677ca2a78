"""The agent's bridge between a shim attach socket (frame protocol) and a gRPC stream.

The peer end of a real socketpair plays the shim's side of the documented protocol.
"""
from __future__ import annotations

import asyncio
import socket
import struct

from flotilla.agent import streams
from flotilla.proto import runtime_pb2 as pb


def read_frames(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    frames, buf = [], b""
    while len(frames) < count:
        buf += sock.recv(65536)
        while len(buf) >= 8:
            kind, length = struct.unpack(">B3xI", buf[:8])
            if len(buf) < 8 + length:
                break
            frames.append((kind, buf[8:8 + length]))
            buf = buf[8 + length:]
    return frames


def test_pump_forwards_input_and_ends_with_exit_code():
    agent_end, shim_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    async def requests():
        yield pb.StreamInput(stdin=b"typed")
        yield pb.StreamInput(resize=pb.Resize(rows=24, cols=80))
        yield pb.StreamInput(close_stdin=True)
        await asyncio.sleep(3600)  # a client that stays connected

    frames, got = asyncio.run(_drive(agent_end, shim_end, requests))
    assert frames == [(streams.STDIN, b"typed"), (streams.RESIZE, struct.pack(">HH", 24, 80)),
                      (streams.CLOSE_STDIN, b"")]
    assert [o.WhichOneof("item") for o in got] == ["stdout", "stderr", "exit_code"]
    assert (got[0].stdout, got[1].stderr, got[2].exit_code) == (b"out", b"err", 3)
    shim_end.close()


async def _drive(agent_end, shim_end, requests):
    loop = asyncio.get_running_loop()
    got = []

    async def consume():
        async for out in streams.pump(agent_end, requests()):
            got.append(out)

    consumer = asyncio.create_task(consume())
    frames = await loop.run_in_executor(None, read_frames, shim_end, 3)
    shim_end.sendall(streams.frame(streams.STDOUT, b"out") + streams.frame(streams.STDERR, b"err")
                     + streams.frame(streams.EXIT, b"3") + streams.frame(streams.STDOUT, b"after exit"))
    await asyncio.wait_for(consumer, 10)
    return frames, got


def test_pump_ends_quietly_when_the_shim_goes_away():
    agent_end, shim_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    async def requests():
        await asyncio.sleep(3600)
        yield pb.StreamInput()

    async def run():
        shim_end.sendall(streams.frame(streams.STDOUT, b"partial"))
        shim_end.close()
        return [o async for o in streams.pump(agent_end, requests())]

    got = asyncio.run(asyncio.wait_for(run(), 10))
    assert [o.stdout for o in got] == [b"partial"]
