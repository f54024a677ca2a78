"""The connection to a manager, and how a failed RPC becomes one line on stderr."""
from __future__ import annotations

import os
import sys

DEFAULT_MANAGER = "unix:///run/flotilla/control.sock"


class ClusterError(Exception):
    """A failure shown as one line with exit code 1."""


def manager_address(flag: str | None) -> str:
    """`-m/--manager`, else $FLOTILLA_MANAGER, else the local control socket."""
    return flag or os.environ.get("FLOTILLA_MANAGER") or DEFAULT_MANAGER


def control(addr: str):
    """A Control stub on `addr` (unix:///PATH or HOST:PORT)."""
    import grpc

    from flotilla.proto import control_pb2_grpc

    channel = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 256 << 20)])
    return control_pb2_grpc.ControlStub(channel)


def run(handler):
    """Wrap a handler `fn(stub, args) -> int` as a swarmctl command `fn(_client, args) -> int`."""
    def command(_client, args) -> int:
        import grpc

        addr = manager_address(args.manager)
        try:
            return handler(control(addr), args) or 0
        except ClusterError as e:
            print(f"Error: {e}", file=sys.stderr)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE and "connect" in (e.details() or "").lower():
                print(f"Cannot connect to the Flotilla manager at {addr}. Is the manager running?", file=sys.stderr)
            else:
                print(f"Error response from manager: {e.details()}", file=sys.stderr)
        return 1
    return command
