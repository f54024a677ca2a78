"""`--change` instructions (Dockerfile syntax) for `import` and `commit`, as an OCI config dict.

Supported: CMD, ENTRYPOINT (JSON or shell form), ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL
— the instructions `docker import --change` accepts that make sense without a build.
"""
from __future__ import annotations

import json
import shlex

from .errors import CLIError


def _command(value: str) -> list[str]:
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return parsed
    return ["/bin/sh", "-c", value]


def _pairs(value: str, what: str) -> list[tuple[str, str]]:
    """`K=V K2="V 2"`, or the old single `K V` form."""
    words = shlex.split(value)
    if words and "=" not in words[0]:
        if len(words) < 2:
            raise CLIError(f"invalid {what} {value!r}: expected KEY=value")
        return [(words[0], value.split(None, 1)[1])]
    out = []
    for word in words:
        key, sep, val = word.partition("=")
        if not sep or not key:
            raise CLIError(f"invalid {what} {word!r}: expected KEY=value")
        out.append((key, val))
    return out


def parse_changes(lines: list[str]) -> dict:
    changes: dict = {}
    for line in lines:
        instruction, _, value = line.strip().partition(" ")
        instruction, value = instruction.upper(), value.strip()
        if not value:
            raise CLIError(f"invalid change {line!r}: {instruction or 'the instruction'} needs a value")
        if instruction == "CMD":
            changes["Cmd"] = _command(value)
        elif instruction == "ENTRYPOINT":
            changes["Entrypoint"] = _command(value)
        elif instruction == "ENV":
            changes.setdefault("Env", []).extend(f"{k}={v}" for k, v in _pairs(value, "ENV"))
        elif instruction == "LABEL":
            changes.setdefault("Labels", {}).update(_pairs(value, "LABEL"))
        elif instruction == "WORKDIR":
            changes["WorkingDir"] = value
        elif instruction == "USER":
            changes["User"] = value
        elif instruction == "EXPOSE":
            for port in value.split():
                changes.setdefault("ExposedPorts", {})[port if "/" in port else f"{port}/tcp"] = {}
        elif instruction == "STOPSIGNAL":
            changes["StopSignal"] = value
        else:
            raise CLIError(f"invalid change {line!r}: {instruction} is not supported "
                           "(use CMD, ENTRYPOINT, ENV, LABEL, WORKDIR, USER, EXPOSE or STOPSIGNAL)")
    return changes
