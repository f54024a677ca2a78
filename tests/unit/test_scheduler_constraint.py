"""The constraint parser and matcher (the Control API validates specs with it)."""
import pytest

from flotilla.manager.scheduler.constraint import ConstraintError, matches_all, parse, parse_all
from flotilla.proto import objects_pb2 as pb


def _node() -> pb.Node:
    n = pb.Node(id="abc123", role=pb.MANAGER)
    n.description.hostname = "Host-1"
    n.description.platform.os = "linux"
    n.description.platform.architecture = "x86_64"
    n.spec.annotations.labels["zone"] = "A"
    n.description.engine_labels["disk"] = "ssd"
    return n


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("node.id==abc123", True),
        ("node.id!=abc123", False),
        ("node.hostname==host-1", True),  # values compare case-insensitively
        ("node.role==manager", True),
        ("node.role != worker", True),
        ("node.platform.os==linux", True),
        ("node.platform.arch==aarch64", False),
        ("node.labels.zone==a", True),
        ("node.labels.zone!=a", False),
        ("node.labels.missing==x", False),  # a missing label never equals
        ("node.labels.missing!=x", True),  # ...and always differs
        ("node.labels.Zone==a", False),  # label names are exact
        ("engine.labels.disk==ssd", True),
        ("engine.labels.disk==hdd", False),
    ],
)
def test_match(expr, expected):
    assert parse(expr).matches(_node()) is expected


def test_all_are_anded():
    assert matches_all(parse_all(["node.role==manager", "node.labels.zone==a"]), _node())
    assert not matches_all(parse_all(["node.role==manager", "node.labels.zone==b"]), _node())


@pytest.mark.parametrize(
    "expr, words",
    [
        ("node.labels.zone=a", "expected KEY==VALUE"),
        ("node.colour==red", "unknown key"),
        ("node.labels.==a", "needs a label name"),
        ("node.hostname==", "value is empty"),
        ("node.role==boss", "manager or worker"),
        ("node.hostname==a\"b", "characters"),
    ],
)
def test_bad_expressions_say_what_to_fix(expr, words):
    with pytest.raises(ConstraintError, match=words):
        parse(expr)


def test_str_round_trips():
    assert str(parse(" node.labels.zone == a ")) == "node.labels.zone==a"
