"""Local volumes: `<root>/volumes/<name>/_data` plus `meta.json` (created, labels, anonymous).

A volume is created in a temp dir and renamed into place, so a crash never leaves half a
volume under a real name. Whether a volume is in use is the Runtime's question (it knows the
containers); this module only stores them.
"""
from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .clock import now
from .errors import InvalidArgument, NotFound
from .fsutil import atomic_write_json, fsync_dir, read_json, remove_tree, sweep_temps
from .spec import NAME_RE


@dataclass
class VolumeInfo:
    name: str
    mountpoint: str
    created: float
    labels: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False


class VolumeStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "volumes"
        self.dir.mkdir(exist_ok=True)
        self.lock = threading.RLock()

    def sweep(self) -> None:
        """Remove volumes half-created or half-removed when a crash interrupted it."""
        with self.lock:
            sweep_temps(self.dir)

    def create(self, name: str = "", labels: dict[str, str] | None = None, anonymous: bool = False) -> VolumeInfo:
        """Create a volume (a random 64-hex name when none is given); an existing name is returned as is."""
        if name and not NAME_RE.match(name):
            raise InvalidArgument(f"invalid volume name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        labels = dict(labels or {})
        if not all(isinstance(k, str) and isinstance(v, str) and k for k, v in labels.items()):
            raise InvalidArgument("invalid volume labels: use non-empty string keys with string values")
        with self.lock:
            name = name or secrets.token_hex(32)
            if (self.dir / name).is_dir():
                return self.get(name)
            tmp = self.dir / f".tmp-{secrets.token_hex(8)}"
            (tmp / "_data").mkdir(parents=True)
            try:
                os.chmod(tmp / "_data", 0o755)
                atomic_write_json(tmp / "meta.json", {"created": now(), "labels": labels, "anonymous": anonymous})
                os.rename(tmp, self.dir / name)
                fsync_dir(self.dir)
            except BaseException:
                remove_tree(tmp)
                raise
            return self.get(name)

    def get(self, name: str) -> VolumeInfo:
        if not NAME_RE.match(name):
            raise NotFound(f"no such volume: {name}")
        path = self.dir / name
        try:
            meta = read_json(path / "meta.json")
        except FileNotFoundError:
            raise NotFound(f"no such volume: {name}") from None
        return VolumeInfo(name=name, mountpoint=str(path / "_data"), created=meta["created"],
                          labels=meta.get("labels", {}), anonymous=meta.get("anonymous", False))

    def list(self) -> list[VolumeInfo]:
        with self.lock:
            return [self.get(p.name) for p in sorted(self.dir.iterdir()) if not p.name.startswith(".")]

    def remove(self, name: str) -> None:
        with self.lock:
            self.get(name)
            remove_tree(self.dir / name)
