"""Output: Docker-like tables for people, JSON for programs."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone


def to_json(messages) -> str:
    from google.protobuf.json_format import MessageToDict

    return json.dumps([MessageToDict(m, preserving_proto_field_name=True) for m in messages], indent=2)


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Columns padded to the widest cell, three spaces apart, as Docker prints them."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    out = sys.stdout
    for row in [headers] + rows:
        out.write("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")


def ago(ts) -> str:
    """A protobuf Timestamp as `3 minutes ago`."""
    if not ts.seconds:
        return ""
    delta = datetime.now(timezone.utc).timestamp() - ts.seconds
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if delta >= size:
            n = int(delta // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return f"{max(int(delta), 1)} seconds ago" if delta >= 2 else "Less than a second ago"
