"""The committed generated modules must be exactly what grpcio-tools makes of the sources."""
import importlib.util
from pathlib import Path

PROTO = Path(__file__).resolve().parents[2] / "proto"


def _load_generator():
    spec = importlib.util.spec_from_file_location("proto_generate", PROTO / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_modules_are_current(tmp_path):
    produced = _load_generator().generate(tmp_path)
    assert produced or not list(PROTO.glob("*.proto"))
    for fresh in produced:
        committed = PROTO / fresh.name
        assert committed.exists(), f"{committed.name} is missing: run `make proto`"
        assert committed.read_text() == fresh.read_text(), f"{committed.name} is stale: run `make proto`"
    stale = {p.name for p in PROTO.glob("*_pb2*.py*")} - {p.name for p in produced}
    assert not stale, f"generated modules without a .proto source: {sorted(stale)}"
