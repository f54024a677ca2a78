"""The Runtime API's message classes for the CLI, without protobuf's pure-Python machinery.

Importing the generated `runtime_pb2` costs the CLI ~30-50 ms of CPU, and not for the messages
themselves: protobuf's `descriptor_pool` and `builder` import `python_message`, `text_format`,
`decoder`, `encoder`... even when the upb backend does all the work. With upb the classes can be
made the way `builder` makes them, minus those imports: the serialized FileDescriptorProto that
protoc wrote into `runtime_pb2.py` is read as data (the module is not executed), added to a
private upb descriptor pool, and each message class is made by upb's `MessageMeta` (what
`GeneratedProtocolMessageType` is under upb). Same descriptor, so the same wire format, fields
and methods. With any other backend, or a generated file that no longer has that shape, the
CLI simply uses `runtime_pb2`.
"""
from __future__ import annotations

import codecs
import os
from typing import Any

_OPEN = "AddSerializedFile(b'"
_CLOSE = "')\n"


class Messages:
    """A stand-in for the `runtime_pb2` module: `DESCRIPTOR` and one attribute per message."""

    def __init__(self, descriptor: Any, classes: dict[str, type]) -> None:
        self.DESCRIPTOR = descriptor
        self.__dict__.update(classes)


def serialized_descriptor(source: str) -> bytes | None:
    """The FileDescriptorProto protoc embedded in a generated module's source, None if absent."""
    start = source.find(_OPEN)
    end = source.find(_CLOSE, start)
    if start < 0 or end < 0:
        return None
    return codecs.escape_decode(source[start + len(_OPEN):end].encode("ascii"))[0]


def load_upb(source: str) -> Messages | None:
    """Message classes made directly by upb from a generated module's source, None if not possible."""
    from google.protobuf.internal import api_implementation

    serialized = serialized_descriptor(source)
    if api_implementation.Type() != "upb" or serialized is None:
        return None
    from google._upb import _message as upb
    from google.protobuf.message import Message

    descriptor = upb.DescriptorPool().AddSerializedFile(serialized)
    if descriptor.enum_types_by_name or any(_has_enums(d) for d in descriptor.message_types_by_name.values()):
        return None  # enums need protobuf's EnumTypeWrapper; runtime.proto has none so far

    def make(d: Any) -> type:  # nested classes first, as builder does (map entries included)
        namespace = {"DESCRIPTOR": d, "__module__": __name__, **{n.name: make(n) for n in d.nested_types}}
        return upb.MessageMeta(d.name, (Message,), namespace)

    return Messages(descriptor, {name: make(d) for name, d in descriptor.message_types_by_name.items()})


def _has_enums(d: Any) -> bool:
    return bool(d.enum_types) or any(_has_enums(n) for n in d.nested_types)


def runtime_messages() -> Any:
    """The Runtime API's messages: made by upb when it is the backend, else `runtime_pb2` itself."""
    import flotilla.proto

    path = os.path.join(flotilla.proto.__path__[0], "runtime_pb2.py")
    with open(path, encoding="utf-8") as f:
        messages = load_upb(f.read())
    if messages is not None:
        return messages
    from flotilla.proto import runtime_pb2
    return runtime_pb2
