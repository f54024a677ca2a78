"""TLS for registries the way Docker configures it: `/etc/docker/certs.d/<host[:port]>/`.

In that directory `*.crt` files are extra CA certificates trusted for the registry, and each
`<name>.cert` with its `<name>.key` is a client certificate. Insecure registries (the
insecure-registries list, and loopback ones) get an unverified context: Docker tries HTTPS
without verification first and falls back to plain HTTP, and so does the client.
"""
from __future__ import annotations

import ssl
from pathlib import Path

from ..errors import InvalidArgument

DEFAULT_CERTS_DIR = Path("/etc/docker/certs.d")


def tls_context(domain: str, certs_dir: Path = DEFAULT_CERTS_DIR, verify: bool = True) -> ssl.SSLContext:
    """A client context for `domain`, with its certs.d CAs and client certificates loaded."""
    if verify:
        ctx = ssl.create_default_context()
    else:
        # Nothing is verified, so the system CAs are not loaded: that alone takes ~90 ms, a
        # third of a 50 MB pull from a loopback registry.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    folder = certs_dir / domain
    if not folder.is_dir():
        return ctx
    for ca in sorted(folder.glob("*.crt")):
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except ssl.SSLError as e:
            raise InvalidArgument(f"cannot load CA certificate {ca}: {e.reason or e}; fix or remove the file") from None
    for cert in sorted(folder.glob("*.cert")):
        key = cert.with_suffix(".key")
        if not key.is_file():
            raise InvalidArgument(f"client certificate {cert} has no matching key {key.name}: add it or remove the certificate")
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except ssl.SSLError as e:
            raise InvalidArgument(f"cannot load client certificate {cert}: {e.reason or e}") from None
    return ctx
