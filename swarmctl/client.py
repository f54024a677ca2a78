"""A connection to the agent's local API; gRPC is imported only when a command needs it."""
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

    def __init__(self, host: str) -> None:
        if not host.startswith("unix://"):
            from .errors import CLIError
            raise CLIError(f"invalid host {host!r}: expected unix:///path/to/agent.sock")
        import grpc
        from flotilla.proto import runtime_pb2

        self.host = host
        self.pb = runtime_pb2
        self.channel = grpc.insecure_channel(host, options=[("grpc.max_receive_message_length", 16 << 20)])
        self.stub = RuntimeMethods(self.channel, runtime_pb2)

    def close(self) -> None:
        self.channel.close()
