"""The json-file log reader: tail, since, partial last lines, corrupt lines."""
from __future__ import annotations

import json

from flotilla.runtime.clock import parse_rfc3339, rfc3339
from flotilla.runtime.logs import read_log


def line(text: str, stream: str = "stdout", t: str = "2026-11-22T06:00:00.000000001Z") -> bytes:
    return json.dumps({"log": text, "stream": stream, "time": t}).encode() + b"\n"


def test_read_tail_since_and_partial_lines(tmp_path):
    path = tmp_path / "c-json.log"
    path.write_bytes(line("a\n", t="2026-11-22T06:00:01.5Z") + b"not json\n" + line("b\n", "stderr", "2026-11-22T06:00:02Z")
                     + line("c\n", t="2026-11-22T06:00:03.000000009Z") + b'{"log":"partial')
    entries = list(read_log(path))
    assert [(e.stream, e.data) for e in entries] == [("stdout", b"a\n"), ("stderr", b"b\n"), ("stdout", b"c\n")]
    assert [e.data for e in read_log(path, tail=2)] == [b"b\n", b"c\n"]
    assert list(read_log(path, tail=0)) == []
    assert [e.data for e in read_log(path, since=parse_rfc3339("2026-11-22T06:00:02Z"))] == [b"b\n", b"c\n"]
    assert list(read_log(tmp_path / "missing")) == []


def test_follow_reads_until_stopped(tmp_path):
    path = tmp_path / "c-json.log"
    path.write_bytes(line("first\n"))
    calls = []

    def stopped() -> bool:
        calls.append(1)
        if len(calls) == 1:  # the process writes one more line, then exits
            with open(path, "ab") as f:
                f.write(line("last\n"))
        return len(calls) >= 2

    assert [e.data for e in read_log(path, follow=True, stopped=stopped)] == [b"first\n", b"last\n"]


def test_rfc3339_round_trip():
    assert rfc3339(0) == "0001-01-01T00:00:00Z"
    assert rfc3339(1.5) == "1970-01-01T00:00:01.500000000Z"
    assert parse_rfc3339("1970-01-01T00:00:01.500000000Z") == 1.5
    assert parse_rfc3339("1970-01-01T01:00:00+01:00") == 0
