"""List filters of the Control API: every non-empty field must match, any entry of a field may."""
from __future__ import annotations

from google.protobuf.message import Message

from flotilla.proto import control_pb2 as cpb

from ..store import name_of


def labels_of(kind: str, obj: Message):
    if kind == "task":
        return obj.annotations.labels
    if kind == "node":
        return {**obj.description.engine_labels, **obj.spec.annotations.labels}
    return obj.spec.annotations.labels


def matches(kind: str, obj: Message, f: cpb.Filters) -> bool:
    if f.names or f.name_prefixes:
        name = name_of(kind, obj)
        if f.names and name not in f.names:
            return False
        if f.name_prefixes and not any(name.startswith(p) for p in f.name_prefixes):
            return False
    if f.id_prefixes and not any(obj.id.startswith(p) for p in f.id_prefixes):
        return False
    if f.labels:
        have = labels_of(kind, obj)
        for key, value in f.labels.items():
            if key not in have or (value and have[key] != value):
                return False
    return True
