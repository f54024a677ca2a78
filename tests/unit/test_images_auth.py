"""Credentials in Docker's config.json format, and WWW-Authenticate parsing."""
from __future__ import annotations

import base64
import json
import stat

import pytest

from flotilla.runtime.errors import InvalidArgument
from flotilla.runtime.imaging.auth import Credentials, CredentialStore, config_path, parse_challenge


def test_store_get_erase_keeps_other_keys(tmp_path) -> None:
    path = tmp_path / "docker" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"credsStore": "", "auths": {"other:5000": {"auth": base64.b64encode(b"o:p").decode()}}, "psFormat": "x"}))
    store = CredentialStore(path)
    store.store("127.0.0.1:5000", Credentials("alice", "s3:cret"))
    data = json.loads(path.read_text())
    assert data["psFormat"] == "x" and "other:5000" in data["auths"]
    assert base64.b64decode(data["auths"]["127.0.0.1:5000"]["auth"]) == b"alice:s3:cret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.get("127.0.0.1:5000") == Credentials("alice", "s3:cret")
    assert store.get("other:5000") == Credentials("o", "p")
    assert store.erase("127.0.0.1:5000") is True
    assert store.erase("127.0.0.1:5000") is False
    assert store.get("127.0.0.1:5000") is None


def test_docker_hub_key_and_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert config_path() == tmp_path / "config.json"
    store = CredentialStore()
    store.store("docker.io", Credentials("u", "p"))
    assert "https://index.docker.io/v1/" in json.loads((tmp_path / "config.json").read_text())["auths"]


def test_broken_config_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{nope")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        CredentialStore(path).get("x")


def test_challenge_parsing() -> None:
    c = parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="flotilla"').scheme == "basic"
