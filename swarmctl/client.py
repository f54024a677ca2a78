"""A connection to the agent's local API; gRPC is imported only when a command needs it."""
from __future__ import annotations

import os

DEFAULT_HOST = "unix:///run/flotilla/agent.sock"


def host_from(flag: str | None) -> str:
    """`-H` wins over FLOTILLA_HOST, which wins over the default socket."""
    return flag or os.environ.get("FLOTILLA_HOST") or DEFAULT_HOST


class Client:
    """The Runtime stub plus the message module, connected lazily."""

    def __init__(self, host: str) -> None:
        if not host.startswith("unix://"):
            from .errors import CLIError
            raise CLIError(f"invalid host {host!r}: expected unix:///path/to/agent.sock")
        import grpc
        from flotilla.proto import runtime_pb2, runtime_pb2_grpc

        self.host = host
        self.pb = runtime_pb2
        self.channel = grpc.insecure_channel(host, options=[("grpc.max_receive_message_length", 16 << 20)])
        self.stub = runtime_pb2_grpc.RuntimeStub(self.channel)

    def close(self) -> None:
        self.channel.close()
