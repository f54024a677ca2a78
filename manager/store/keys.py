"""Key layout in etcd: `<prefix><kind>/<id>`; values are the serialized protobuf objects."""
from __future__ import annotations

from google.protobuf.message import Message

from flotilla.proto import objects_pb2

KINDS: dict[str, type[Message]] = {
    "node": objects_pb2.Node,
    "service": objects_pb2.Service,
    "task": objects_pb2.Task,
    "network": objects_pb2.Network,
    "cluster": objects_pb2.Cluster,
}


def prefix_end(prefix: bytes) -> bytes:
    """The etcd range end that covers every key starting with `prefix`."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def object_key(prefix: str, kind: str, obj_id: str) -> bytes:
    """The key of one object."""
    return f"{prefix}{kind}/{obj_id}".encode()


def split_key(prefix: bytes, key: bytes) -> tuple[str, str] | None:
    """(kind, id) of a key under `prefix`, or None for keys that are not objects (the leader key)."""
    rest = key[len(prefix):]
    kind, sep, obj_id = rest.partition(b"/")
    if not sep or not obj_id:
        return None
    k = kind.decode()
    return (k, obj_id.decode()) if k in KINDS else None
