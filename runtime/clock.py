"""Timestamps as Docker shows them: RFC 3339 with nanoseconds, UTC (`2026-11-22T06:00:00.123456789Z`)."""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

ZERO_TIME = "0001-01-01T00:00:00Z"  # Docker's value for "never" (e.g. FinishedAt of a running container)
_RFC3339_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def rfc3339(ts: float | None) -> str:
    """Format an epoch float (None or 0 → Docker's zero time)."""
    if not ts:
        return ZERO_TIME
    ns = int(round(ts * 1e9))
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def parse_rfc3339(text: str) -> float:
    """Parse an RFC 3339 timestamp (nanoseconds allowed) into an epoch float; ValueError if malformed."""
    m = _RFC3339_RE.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    whole = datetime.fromisoformat(m.group(1) + zone).timestamp()
    return whole + int((m.group(2) or "0").ljust(9, "0")) / 1e9


def now() -> float:
    return time.time()
