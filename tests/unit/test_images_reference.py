"""References normalize as Docker's distribution/reference does; bad ones fail with one clear line."""
from __future__ import annotations

import pytest

from flotilla.runtime.errors import InvalidArgument
from flotilla.runtime.imaging.reference import parse, registry_key

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text,full,familiar", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1", "busybox:1"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("host:5000/a/b:tag", "host:5000/a/b:tag", "host:5000/a/b:tag"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
    ("ghcr.io/o/r/s:v1.0-rc_1", "ghcr.io/o/r/s:v1.0-rc_1", "ghcr.io/o/r/s:v1.0-rc_1"),
    (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
    (f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}", "busybox:1"),
])
def test_normalization(text: str, full: str, familiar: str) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar


def test_wire_reference_prefers_digest() -> None:
    assert parse(f"a:1@{DIGEST}").wire_reference == DIGEST
    assert parse("a:1").wire_reference == "1"
    assert parse("a").path == "library/a" and parse("a").domain == "docker.io"


@pytest.mark.parametrize("text,fragment", [
    ("", "empty"),
    ("Busybox", "lowercase"),
    ("busy box", "may use only"),
    ("busybox:", "tag"),
    ("busybox:bad/tag", "registry host"),
    ("busybox@sha256:123", "digest"),
    ("a//b", "may use only"),
    ("host_name:5000/x", "registry host"),
    ("-bad", "may use only"),
    ("x:" + "t" * 129, "128"),
])
def test_bad_references(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse(text)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_registry_key_matches_docker_config() -> None:
    assert registry_key("docker.io") == "https://index.docker.io/v1/"
    assert registry_key("127.0.0.1:5000") == "127.0.0.1:5000"


@pytest.mark.parametrize("text,domain", [
    ("", "docker.io"), ("docker.io", "docker.io"), ("https://index.docker.io/v1/", "docker.io"),
    ("127.0.0.1:5000", "127.0.0.1:5000"), ("http://localhost:5000/", "localhost:5000"), ("localhost", "localhost"),
    ("registry.example.com", "registry.example.com"),
])
def test_registry_domain(text: str, domain: str) -> None:
    from flotilla.runtime.imaging.reference import registry_domain
    assert registry_domain(text) == domain


def test_registry_domain_rejects_non_hosts() -> None:
    from flotilla.runtime.imaging.reference import registry_domain
    with pytest.raises(InvalidArgument, match="host"):
        registry_domain("notahost")
    with pytest.raises(InvalidArgument, match="host"):
        registry_domain("bad_host.example:5000")
