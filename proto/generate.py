"""Regenerate the Python modules of every .proto file in this folder.

The files are compiled under the virtual path ``flotilla/proto/`` so that the generated
modules import each other as ``flotilla.proto.x_pb2`` and never as a top-level ``proto``
(which would collide with other distributions). ``tests/unit/test_proto_generated.py``
fails when the committed modules differ from what this script produces.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
VIRTUAL = "flotilla/proto"


def generate(out_dir: Path) -> list[Path]:
    """Compile every proto into ``out_dir`` and return the generated files."""
    sources = sorted(p.name for p in HERE.glob("*.proto"))
    if not sources:
        return []
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{VIRTUAL}={HERE}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[f"{VIRTUAL}/{s}" for s in sources],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        produced = []
        for f in sorted((Path(tmp) / VIRTUAL).glob("*_pb2*.py*")):
            target = out_dir / f.name
            shutil.copyfile(f, target)
            produced.append(target)
        return produced


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for path in generate(out):
        print(path)
