"""Parsing of flag values: sizes, CPUs, durations, key=value pairs."""
from __future__ import annotations

import re

from .connect import ClusterError

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def size(text: str) -> int:
    """`64M`, `1g`, `1048576` to bytes (powers of 1024, as Docker's --memory)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ClusterError(f"invalid size {text!r}: use a number with an optional k, m, g or t suffix")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def nano_cpus(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ClusterError(f"invalid CPU count {text!r}: use a number such as 0.5") from None
    if value < 0:
        raise ClusterError(f"invalid CPU count {text!r}: must not be negative")
    return int(round(value * 1e9))


def duration_ns(text: str) -> int:
    """`5s`, `200ms`, `1m`, `1h` to nanoseconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ClusterError(f"invalid duration {text!r}: use e.g. 5s, 200ms, 1m")
    return int(float(m.group(1)) * {"ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}[m.group(2)])


def pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not key:
        raise ClusterError(f"invalid {what} {text!r}: use key=value")
    return key, value
