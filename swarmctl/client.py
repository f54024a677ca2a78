"""A connection to the agent's local API: its CLI socket when there is one, gRPC otherwise.

`-H unix:///PATH` (or FLOTILLA_HOST) names the agent's gRPC socket. When `PATH.cli` exists the
agent serves the same API there without HTTP/2 (docs/agent.md, "The CLI socket") and grpcio is
never imported; `-H unix:///PATH.cli` names that socket directly, and FLOTILLA_TRANSPORT=grpc
forces gRPC. Either way the commands see the same `stub` methods and messages, and catch
`client.RpcError`, whose `code().name` is gRPC's status code name.
"""
from __future__ import annotations

import os
from typing import Any

DEFAULT_HOST = "unix:///run/flotilla/agent.sock"
_KINDS = {(False, False): "unary_unary", (False, True): "unary_stream",
          (True, False): "stream_unary", (True, True): "stream_stream"}


def host_from(flag: str | None) -> str:
    """`-H` wins over FLOTILLA_HOST, which wins over the default socket."""
    return flag or os.environ.get("FLOTILLA_HOST") or DEFAULT_HOST


class RuntimeMethods:
    """The Runtime service's client methods, each made on first use from the service descriptor.

    It stands in for the generated `runtime_pb2_grpc.RuntimeStub`, which builds all of the
    service's ~50 method callables up front and whose module alone costs ~10 ms to import, while
    one CLI command calls one to three methods. The calls are the same: path, serializers and
    streaming kind come from the descriptor the generated stub is made from.
    """

    def __init__(self, channel: Any, pb: Any) -> None:
        self._channel = channel
        self._pb = pb
        self._service = pb.DESCRIPTOR.services_by_name["Runtime"]

    def __getattr__(self, name: str) -> Any:
        method = self._service.methods_by_name.get(name)
        if method is None:
            raise AttributeError(f"the Runtime service has no method {name!r}")
        make = getattr(self._channel, _KINDS[(method.client_streaming, method.server_streaming)])
        call = make(f"/{self._service.full_name}/{name}",
                    request_serializer=getattr(self._pb, method.input_type.name).SerializeToString,
                    response_deserializer=getattr(self._pb, method.output_type.name).FromString,
                    _registered_method=True)
        setattr(self, name, call)
        return call


class Client:
    """The Runtime stub plus the message module, connected lazily."""

    RpcError: type[Exception]

    def __init__(self, host: str) -> None:
        if not host.startswith("unix://"):
            from .errors import CLIError
            raise CLIError(f"invalid host {host!r}: expected unix:///path/to/agent.sock")
        from flotilla.proto import framing

        self.host = host
        self.channel = None
        path = host[len("unix://"):]
        cli_path = path if path.endswith(framing.SOCKET_SUFFIX) else framing.cli_socket_path(path)
        if cli_path == path or (os.environ.get("FLOTILLA_TRANSPORT") != "grpc" and os.path.exists(cli_path)):
            from .messages import runtime_messages
            from .socket_client import CallError, SocketMethods

            self.pb = runtime_messages()
            self.RpcError = CallError
            self.stub = SocketMethods(cli_path, self.pb)
            return
        import grpc
        from flotilla.proto import runtime_pb2

        self.pb = runtime_pb2

        self.RpcError = grpc.RpcError
        self.channel = grpc.insecure_channel(host, options=[("grpc.max_receive_message_length", 16 << 20)])
        self.stub = RuntimeMethods(self.channel, runtime_pb2)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
