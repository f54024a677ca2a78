"""A trivial unary RPC over a unix socket: grpc.aio server against the sync server with a thread pool.

Why: the agent serves four unary calls per container (create, start, wait, remove) on grpc.aio;
this measures what the server flavour itself costs per call, with an empty handler, so that the
choice between the two is made on this machine's figures. Each server runs in a process of its
own (its CPU time is read from /proc); one warm client calls both in turn, one sample each, so
both see the same load. The `to_thread` variant adds the agent's thread hop to the aio handler.

    .venv/bin/python bench/grpc_unary.py --calls 2000
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

METHOD = "/bench.Echo/Call"
FLAVOURS = ("aio", "aio+to_thread", "sync-pool")


def _identity(data: bytes) -> bytes:
    return data


def serve(flavour: str, path: str) -> None:
    """Run one server flavour until killed."""
    if flavour == "sync-pool":
        def call(request: bytes, context) -> bytes:
            return request
        server = grpc.server(ThreadPoolExecutor(max_workers=32))
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", {
            "Call": grpc.unary_unary_rpc_method_handler(call, _identity, _identity)})])
        server.add_insecure_port(f"unix:{path}")
        server.start()
        server.wait_for_termination()
        return

    async def main() -> None:
        hop = flavour == "aio+to_thread"

        async def call(request: bytes, context) -> bytes:
            return await asyncio.to_thread(_identity, request) if hop else request
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", {
            "Call": grpc.unary_unary_rpc_method_handler(call, _identity, _identity)})])
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        await server.wait_for_termination()
    asyncio.run(main())


def cpu_ms(pid: int) -> float:
    """User + system CPU time of a process, every thread included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per flavour (default 2000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-grpc-bench-") as tmp:
        procs, stubs, channels = {}, {}, []
        try:
            for flavour in FLAVOURS:
                path = str(Path(tmp) / f"{flavour}.sock")
                procs[flavour] = subprocess.Popen([sys.executable, __file__, "--serve", flavour, path])
                channel = grpc.insecure_channel(f"unix:{path}")
                channels.append(channel)
                grpc.channel_ready_future(channel).result(timeout=20)
                stubs[flavour] = channel.unary_unary(METHOD, request_serializer=_identity,
                                                     response_deserializer=_identity)
                for _ in range(50):  # warm up
                    stubs[flavour](b"x")
            walls: dict[str, list[float]] = {f: [] for f in FLAVOURS}
            cpu0 = {f: cpu_ms(p.pid) for f, p in procs.items()}
            for _ in range(args.calls):
                for flavour in FLAVOURS:
                    t0 = time.perf_counter()
                    stubs[flavour](b"x")
                    walls[flavour].append((time.perf_counter() - t0) * 1e6)
            print(f"trivial unary RPC over a unix socket, {args.calls} calls each, alternating:")
            for flavour in FLAVOURS:
                cpu = (cpu_ms(procs[flavour].pid) - cpu0[flavour]) * 1000 / args.calls
                print(f"  {flavour:14s} wall median {statistics.median(walls[flavour]):6.0f} us, "
                      f"server CPU {cpu:5.0f} us per call")
        finally:
            for channel in channels:
                channel.close()
            for proc in procs.values():
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
