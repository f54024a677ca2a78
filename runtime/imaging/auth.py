"""Registry credentials stored as Docker stores them, and the token dance of the v2 protocol.

Credentials live in `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`) under
`auths[<registry>].auth` = base64("user:password"), so `docker login` and Flotilla share one
file. A registry answers 401 with `WWW-Authenticate: Bearer realm=..,service=..,scope=..`
(then a token is fetched from the realm, with basic auth if credentials exist) or `Basic`
(then the credentials go on every request).
"""
from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidArgument
from ..fsutil import atomic_write_bytes
from .reference import registry_key

_PARAM_RE = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^\s,]+)')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


@dataclass(frozen=True)
class Challenge:
    """A parsed `WWW-Authenticate` header."""

    scheme: str                  # "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge:
    """Parse `Bearer realm="https://auth",service="registry",scope="repository:x:pull"`."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _PARAM_RE.finditer(rest):
        key = m.group(1) or m.group(3)
        params[key.lower()] = m.group(2) if m.group(1) else m.group(4)
    return Challenge(scheme.lower(), params)


def config_path() -> Path:
    """Where credentials live: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


class CredentialStore:
    """Read and write the `auths` section of a Docker config.json, keeping every other key."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_path()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise InvalidArgument(f"{self.path} is not valid JSON ({e}): fix or remove it") from None
        if not isinstance(data, dict):
            raise InvalidArgument(f"{self.path} is not a JSON object: fix or remove it")
        return data

    def get(self, domain: str) -> Credentials | None:
        auths = self._load().get("auths") or {}
        key = registry_key(domain)
        entry = auths.get(key) or auths.get(f"https://{key}") or auths.get(f"http://{key}")
        if not isinstance(entry, dict):
            return None
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
        if not entry.get("auth"):
            return None
        try:
            user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument(f"{self.path}: the auth entry for {key} is not base64 'user:password'; log in again") from None
        return Credentials(user, password) if sep else None

    def store(self, domain: str, creds: Credentials) -> None:
        data = self._load()
        data.setdefault("auths", {})[registry_key(domain)] = {
            "auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
        self._write(data)

    def erase(self, domain: str) -> bool:
        """Forget the registry's credentials; False when there were none (Docker says so, too)."""
        data = self._load()
        auths = data.get("auths") or {}
        if registry_key(domain) not in auths:
            return False
        del auths[registry_key(domain)]
        self._write(data)
        return True

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(self.path, json.dumps(data, indent="\t").encode() + b"\n", mode=0o600)
