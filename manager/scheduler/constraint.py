"""Placement constraints: `node.labels.zone==a`, `node.role!=manager`, ...

Same grammar and matching as SwarmKit (and so Docker's `--constraint`): a key, `==` or
`!=`, a value; values compare case-insensitively, label names exactly. The
Control API validates constraints with `parse_all` so that a typo is rejected when the
service is created instead of leaving its tasks PENDING forever.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from flotilla.proto import objects_pb2

# The fixed keys; `node.labels.X` and `engine.labels.X` are handled by prefix.
_FIXED_KEYS = ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")
_LABEL_PREFIXES = ("node.labels.", "engine.labels.")
_EXPR = re.compile(r"^\s*([^=!\s]+)\s*(==|!=)\s*(.*?)\s*$")
# SwarmKit's value alphabet: what a hostname, id, role, os, arch or label value can hold.
_VALUE = re.compile(r"^[A-Za-z0-9:\-_\s.*()?+\[\]\\^$|/@]+$")


class ConstraintError(ValueError):
    """A constraint expression that cannot be parsed; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Constraint:
    """One parsed `key op value` expression."""

    key: str
    equal: bool  # True for `==`, False for `!=`
    value: str

    def matches(self, node: objects_pb2.Node) -> bool:
        """Whether `node` satisfies this constraint.

        A label constraint on a label the node lacks: `==` fails, `!=` holds (as in SwarmKit).
        """
        actual = node_value(node, self.key)
        if actual is None:
            return not self.equal
        return (actual.lower() == self.value.lower()) == self.equal

    def __str__(self) -> str:
        return f"{self.key}{'==' if self.equal else '!='}{self.value}"


def node_value(node: objects_pb2.Node, key: str) -> str | None:
    """The value `key` names on `node`, or None when the node has no such label."""
    if key == "node.id":
        return node.id
    if key == "node.hostname":
        return node.description.hostname
    if key == "node.role":
        return objects_pb2.NodeRole.Name(node.role).lower()
    if key == "node.platform.os":
        return node.description.platform.os
    if key == "node.platform.arch":
        return node.description.platform.architecture
    if key.startswith("node.labels."):
        return node.spec.annotations.labels.get(key[len("node.labels."):])
    if key.startswith("engine.labels."):
        return node.description.engine_labels.get(key[len("engine.labels."):])
    raise ConstraintError(f"unknown constraint key {key!r}")


def parse(expr: str) -> Constraint:
    """Parse one expression; raise ConstraintError with a message a user can act on."""
    m = _EXPR.match(expr)
    if not m:
        raise ConstraintError(f"invalid constraint {expr!r}: expected KEY==VALUE or KEY!=VALUE")
    key, op, value = m.groups()
    key_lower = key.lower()
    if key_lower in _FIXED_KEYS:
        key = key_lower
    elif key_lower.startswith(_LABEL_PREFIXES):
        prefix = next(p for p in _LABEL_PREFIXES if key_lower.startswith(p))
        label = key[len(prefix):]
        if not label:
            raise ConstraintError(f"invalid constraint {expr!r}: {prefix}<name> needs a label name")
        key = prefix + label
    else:
        allowed = ", ".join([*_FIXED_KEYS, "node.labels.<name>", "engine.labels.<name>"])
        raise ConstraintError(f"invalid constraint {expr!r}: unknown key {key!r} (use one of {allowed})")
    if not value:
        raise ConstraintError(f"invalid constraint {expr!r}: the value is empty")
    if not _VALUE.match(value):
        raise ConstraintError(f"invalid constraint {expr!r}: the value {value!r} has characters a node value cannot have")
    if key == "node.role" and value.lower() not in ("manager", "worker"):
        raise ConstraintError(f"invalid constraint {expr!r}: node.role is manager or worker")
    return Constraint(key, op == "==", value)


def parse_all(exprs: list[str] | tuple[str, ...]) -> list[Constraint]:
    """Parse every expression (the Control API calls this to validate a service spec)."""
    return [parse(e) for e in exprs]


def matches_all(constraints: list[Constraint], node: objects_pb2.Node) -> bool:
    """Whether `node` satisfies every constraint (they are ANDed, as in SwarmKit)."""
    return all(c.matches(node) for c in constraints)
