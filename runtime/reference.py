"""Image references as Docker spells them: `[registry[:port]/]path[:tag][@digest]`.

Issue 3 (registries) extends this; for now the registry part is kept verbatim in `name`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidArgument

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
_NAME_RE = re.compile(rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DEFAULT_TAG = "latest"


@dataclass(frozen=True)
class Reference:
    """A parsed reference; `str()` gives the canonical `name:tag` (or `name@digest`)."""

    name: str
    tag: str = DEFAULT_TAG
    digest: str = ""

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


def parse_reference(text: str) -> Reference:
    """Parse `name[:tag][@sha256:hex]`, defaulting the tag to `latest` as Docker does."""
    ref = text.strip()
    digest = ""
    if "@" in ref:
        ref, _, digest = ref.partition("@")
        if not _DIGEST_RE.match(digest):
            raise InvalidArgument(f"invalid reference format {text!r}: digest must be sha256: followed by 64 hex digits")
    name, tag = ref, ""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidArgument(f"invalid reference format {text!r}: tag {tag!r} may use only [A-Za-z0-9_.-], up to 128 characters")
    if not name:
        raise InvalidArgument("invalid reference format: the repository name is empty")
    if name.lower() != name and not _NAME_RE.match(name):
        raise InvalidArgument(f"invalid reference format {text!r}: repository name must be lowercase")
    if not _NAME_RE.match(name) or len(name) > 255:
        raise InvalidArgument(f"invalid reference format {text!r}: the repository name may use only lowercase letters, digits and separators (. _ - /)")
    return Reference(name=name, tag=tag or (DEFAULT_TAG if not digest else ""), digest=digest)
