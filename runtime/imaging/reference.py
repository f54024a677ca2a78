"""Image references normalized exactly as Docker's `distribution/reference` does.

`busybox` is `docker.io/library/busybox:latest`; the first path component is a registry host
only if it contains `.` or `:` or is `localhost` (otherwise `a/b` means `docker.io/a/b`). The
runtime stores tags in the *familiar* form it has always used (`busybox:latest`,
`host:5000/a/b:tag`), so `familiar()` gives that key and `parse()` the full one for the wire.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageRef:
    """A normalized reference: registry `domain`, repository `path`, `tag` and/or `digest`."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        """`docker.io/library/busybox`: the full name without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The name as Docker prints it (`busybox`, `user/app`, `host:5000/a/b`)."""
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        return self.path.removeprefix(OFFICIAL_PREFIX) if self.path.count("/") == 1 else self.path

    def familiar(self) -> str:
        """The key the runtime's tag table uses: `busybox:latest` or `name@sha256:...`."""
        return f"{self.familiar_name}@{self.digest}" if self.digest and not self.tag else f"{self.familiar_name}:{self.tag}"

    @property
    def wire_reference(self) -> str:
        """What goes into `/v2/<name>/manifests/<reference>`: the digest wins over the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def split_domain(name: str) -> tuple[str, str]:
    """Docker's rule for whether the first component of `name` is a registry host."""
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def parse(text: str, default_tag: bool = True) -> ImageRef:
    """Parse `[domain[:port]/]path[:tag][@sha256:hex]`; errors say which part is wrong."""
    ref = text.strip()
    if not ref:
        raise InvalidArgument("invalid reference format: the reference is empty")
    digest = ""
    if "@" in ref:
        ref, _, digest = ref.partition("@")
        if not _DIGEST_RE.match(digest):
            raise InvalidArgument(f"invalid reference format {text!r}: digest must be sha256: followed by 64 lowercase hex digits")
    name, tag = ref, ""
    colon, slash = ref.rfind(":"), ref.rfind("/")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidArgument(f"invalid reference format {text!r}: tag {tag!r} may use only [A-Za-z0-9_.-], up to 128 characters")
    if not name:
        raise InvalidArgument(f"invalid reference format {text!r}: the repository name is empty")
    domain, path = split_domain(name)
    if not _DOMAIN_RE.match(domain):
        raise InvalidArgument(f"invalid reference format {text!r}: {domain!r} is not a valid registry host[:port]")
    if path.lower() != path:
        raise InvalidArgument(f"invalid reference format {text!r}: repository name must be lowercase")
    if not _PATH_RE.match(path):
        raise InvalidArgument(f"invalid reference format {text!r}: the repository name may use only lowercase letters, digits and separators (. _ - /)")
    if len(domain) + 1 + len(path) > 255:
        raise InvalidArgument(f"invalid reference format {text!r}: the repository name is longer than 255 characters")
    if not tag and not digest and default_tag:
        tag = DEFAULT_TAG
    return ImageRef(domain=domain, path=path, tag=tag, digest=digest)


def registry_key(domain: str) -> str:
    """The key `~/.docker/config.json` uses for a registry (Docker Hub keeps its legacy URL)."""
    return "https://index.docker.io/v1/" if domain == DEFAULT_DOMAIN else domain


def registry_domain(text: str) -> str:
    """The registry host of a `login`/`logout` argument: `host:port`, a URL, or "" for Docker Hub."""
    host = text.strip().removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    if not host:
        return DEFAULT_DOMAIN
    domain = split_domain(f"{host}/x")[0] if ("." in host or ":" in host or host == "localhost") else ""
    if not domain or not _DOMAIN_RE.match(domain):
        raise InvalidArgument(f"invalid registry {text!r}: give a host[:port] such as registry.example.com:5000")
    return domain
