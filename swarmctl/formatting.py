"""Docker's output formats: padded tables, human durations and sizes, `ps` status lines.

Pure functions of their inputs (the current time is a parameter) so they can be unit-tested.
"""
from __future__ import annotations

import json
import shlex


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to the widest cell plus three spaces, as Docker's tabwriter prints them."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = []
    for row in [headers, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def human_size(size: float) -> str:
    """Docker's units.HumanSize: decimal units, three significant digits ("4.27MB")."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.3g}{units[i]}"


def bytes_size(size: float) -> str:
    """Docker's units.BytesSize: binary units with two decimals ("1.5MiB"), as `stats` shows."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while size >= 1024 and i < len(units) - 1:
        size /= 1024.0
        i += 1
    return f"{size:.4g}{units[i]}"


def ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def short_id(container_id: str) -> str:
    return container_id.removeprefix("sha256:")[:12]


def container_status(status: str, exit_code: int, started_at: float, finished_at: float, now: float) -> str:
    """The STATUS column of `docker ps`."""
    if status == "running":
        return f"Up {human_duration(now - started_at)}"
    if status == "paused":
        return f"Up {human_duration(now - started_at)} (Paused)"
    if status == "restarting":
        return f"Restarting ({exit_code}) {human_duration(now - finished_at)} ago"
    if status == "exited":
        return f"Exited ({exit_code}) {human_duration(now - finished_at)} ago" if finished_at else f"Exited ({exit_code})"
    if status == "created":
        return "Created"
    if status == "dead":
        return "Dead"
    return status


def quoted_command(command: str, truncate: bool) -> str:
    """The COMMAND column: Go's strconv.Quote of the (truncated) command."""
    text = ellipsis(command, 20) if truncate else command
    return json.dumps(text, ensure_ascii=False)


def json_dump(value: object) -> str:
    """`docker inspect` prints JSON indented by four spaces."""
    return json.dumps(value, indent=4, ensure_ascii=False)


def command_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) if any(c.isspace() for c in a) else a for a in argv)


def volume_document(info) -> dict:
    """`docker volume inspect`'s document for a VolumeInfo message."""
    from datetime import datetime, timezone

    created = datetime.fromtimestamp(info.created, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"CreatedAt": created, "Driver": "local", "Labels": dict(info.labels), "Mountpoint": info.mountpoint,
            "Name": info.name, "Options": {}, "Scope": "local"}
