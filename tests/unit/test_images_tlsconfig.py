"""certs.d handling: bad files are one clear error, not a TLS failure later."""
from __future__ import annotations

import ssl

import pytest

from flotilla.runtime.errors import InvalidArgument
from flotilla.runtime.imaging.tlsconfig import tls_context


def test_no_folder_gives_a_verifying_context(tmp_path) -> None:
    ctx = tls_context("registry.example:5000", tmp_path)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    lax = tls_context("registry.example:5000", tmp_path, verify=False)
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname


def test_bad_ca_and_lonely_client_cert(tmp_path) -> None:
    folder = tmp_path / "registry.example:5000"
    folder.mkdir()
    (folder / "ca.crt").write_text("not a certificate")
    with pytest.raises(InvalidArgument, match="cannot load CA certificate"):
        tls_context("registry.example:5000", tmp_path)
    (folder / "ca.crt").unlink()
    (folder / "client.cert").write_text("x")
    with pytest.raises(InvalidArgument, match="no matching key client.key"):
        tls_context("registry.example:5000", tmp_path)
