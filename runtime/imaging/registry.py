"""A registry v2 (OCI distribution) client on `http.client`.

TLS: verified HTTPS with the system CAs plus `/etc/docker/certs.d/<host>/` (tlsconfig.py); an
insecure registry (the insecure-registries list and loopback, as in Docker) is probed once:
HTTPS without verification if it answers, else plain HTTP.

Why the standard library and not httpx/requests: the protocol needs exact control that those
hide or complicate — no automatic redirects with credentials (blob GETs may redirect to
storage on another host, where the Authorization header must not follow), streaming bodies
into the verifying content-store writer, Range resumes and chunked PATCH uploads with
Content-Range — and it keeps the runtime free of another dependency. Connections are kept
alive per thread, so concurrent layer transfers each reuse their own socket.

Retries: connection errors and 5xx answers are retried (three times, with backoff) for every
request that can be repeated; an interrupted blob download resumes with `Range`, an
interrupted chunked upload asks the registry how much it has (`GET` on the upload URL) and
continues from there.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from ..errors import InvalidArgument, NotFound
from .auth import Challenge, Credentials, parse_challenge
from .errors import RegistryError, Unauthorized
from .manifest import ACCEPT
from .reference import DEFAULT_DOMAIN
from .tlsconfig import DEFAULT_CERTS_DIR, tls_context

DOCKER_HUB_API = "registry-1.docker.io"
RETRIES = 3
BACKOFF = (0.2, 0.6, 1.5)
UPLOAD_CHUNK = 16 << 20
READ_CHUNK = 1 << 20


def is_loopback(domain: str) -> bool:
    """`localhost`, 127.0.0.0/8 and ::1 registries are insecure by default, as in Docker."""
    host = urllib.parse.urlsplit("//" + domain).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Response:
    """A finished or streaming answer; `body` is read lazily for blobs."""

    status: int
    headers: http.client.HTTPMessage
    raw: http.client.HTTPResponse

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    def read(self) -> bytes:
        return self.raw.read()


class RegistryClient:
    """One registry host. `scopes` are granted lazily: a 401 challenge is answered and cached."""

    def __init__(self, domain: str, credentials: Credentials | None = None, insecure: bool = False,
                 timeout: float = 60.0, certs_dir: Path = DEFAULT_CERTS_DIR) -> None:
        """`insecure`: HTTPS without verification, else plain HTTP (probed once); otherwise verified HTTPS only."""
        self.domain = domain
        self.host = DOCKER_HUB_API if domain == DEFAULT_DOMAIN else domain
        self.insecure = insecure
        self.tls = tls_context(domain, certs_dir, verify=not insecure)
        self._scheme = "" if insecure else "https"
        self.credentials = credentials
        self.timeout = timeout
        self._tokens: dict[str, str] = {}          # scope -> "Bearer ..." / "Basic ..."
        self._challenge: Challenge | None = None
        self._local = threading.local()
        self._lock = threading.Lock()

    # -- connections ----------------------------------------------------------------------
    def _conn(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        pool = self._local.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=self.timeout, context=self.tls)
            else:
                conn = http.client.HTTPConnection(netloc, timeout=self.timeout)
            pool[(scheme, netloc)] = conn
        return conn

    @property
    def scheme(self) -> str:
        """https, or for an insecure registry whatever answers first: https (unverified), then http."""
        with self._lock:
            if not self._scheme:
                try:
                    self._send("GET", f"https://{self.host}/v2/", {}, None).read()
                    self._scheme = "https"
                except (OSError, http.client.HTTPException):
                    self._drop_conn("https", self.host)
                    self._scheme = "http"
            return self._scheme

    def _drop_conn(self, scheme: str, netloc: str) -> None:
        conn = self._local.__dict__.get("pool", {}).pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for conn in self._local.__dict__.get("pool", {}).values():
            conn.close()
        self._local.__dict__["pool"] = {}

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | BinaryIO | None) -> Response:
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = self._conn(parts.scheme, parts.netloc)
        try:
            conn.request(method, path, body=body, headers=headers)
            raw = conn.getresponse()
        except (OSError, http.client.HTTPException):
            self._drop_conn(parts.scheme, parts.netloc)
            raise
        return Response(raw.status, raw.headers, raw)

    # -- auth -----------------------------------------------------------------------------
    def _authorization(self, scope: str) -> str | None:
        with self._lock:
            if scope in self._tokens:
                return self._tokens[scope]
            if self._challenge and self._challenge.scheme == "basic" and self.credentials:
                return self.credentials.basic_header()
        return None

    def _authenticate(self, challenge_header: str, scope: str) -> None:
        """Answer a 401: fetch a bearer token for `scope`, or switch to basic credentials."""
        challenge = parse_challenge(challenge_header)
        with self._lock:
            self._challenge = challenge
        if challenge.scheme == "basic":
            if not self.credentials:
                raise Unauthorized(f"{self.domain} requires authentication: log in first")
            with self._lock:
                self._tokens[scope] = self.credentials.basic_header()
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise Unauthorized(f"{self.domain} asked for unsupported authentication {challenge_header!r}")
        query = {"service": challenge.params.get("service", "")}
        url = challenge.params["realm"] + "?" + urllib.parse.urlencode(
            [("service", query["service"])] + [("scope", s) for s in scope.split(" ") if s])
        headers = {"Authorization": self.credentials.basic_header()} if self.credentials else {}
        resp = self._send("GET", url, headers, None)
        body = resp.read()
        if resp.status in (401, 403):
            raise Unauthorized(f"login to {self.domain} failed: the token service refused the credentials ({resp.status})")
        if resp.status != 200:
            raise RegistryError(f"token service of {self.domain} answered {resp.status}", resp.status)
        try:
            obj = json.loads(body)
            token = obj.get("token") or obj["access_token"]
        except (ValueError, KeyError):
            raise RegistryError(f"token service of {self.domain} sent no token") from None
        with self._lock:
            self._tokens[scope] = f"Bearer {token}"

    # -- requests -------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    def request(self, method: str, path_or_url: str, scope: str, headers: dict[str, str] | None = None,
                body: bytes | Callable[[], BinaryIO] | None = None, ok: Iterable[int] = (200,),
                follow: bool = True) -> Response:
        """Send with auth, retries and redirects; raise a clear error unless the status is in `ok`.

        `body` is bytes or a factory of a fresh stream (so a retry can re-send it).
        """
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        ok = tuple(ok)
        authed_once = False
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            same_host = urllib.parse.urlsplit(url).netloc == self.host
            auth = self._authorization(scope) if same_host else None
            if auth:
                hdrs["Authorization"] = auth
            payload = body() if callable(body) else body
            try:
                resp = self._send(method, url, hdrs, payload)
            except ssl.SSLCertVerificationError as e:
                raise RegistryError(f"TLS verification of {self.domain} failed ({e.verify_message}): put its CA in "
                                    f"/etc/docker/certs.d/{self.domain}/ca.crt or list it as an insecure registry") from None
            except (OSError, http.client.HTTPException) as e:
                if attempt >= RETRIES:
                    raise RegistryError(f"cannot reach registry {self.domain}: {e}") from None
                time.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1
                continue
            if resp.status == 401 and same_host and not authed_once:
                resp.read()
                authed_once = True
                self._authenticate(resp.header("WWW-Authenticate"), scope)
                continue
            if resp.status in (301, 302, 303, 307, 308) and follow and method in ("GET", "HEAD"):
                resp.read()
                url = urllib.parse.urljoin(url, resp.header("Location"))
                continue
            if resp.status >= 500 and attempt < RETRIES:
                resp.read()
                time.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1
                continue
            if resp.status in ok:
                return resp
            raise self._error(resp, method, url)

    def _error(self, resp: Response, method: str, url: str) -> Exception:
        body = resp.read() if method != "HEAD" else b""
        detail = ""
        try:
            errs = json.loads(body).get("errors") or []
            detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errs)
        except (ValueError, AttributeError):
            detail = body[:200].decode(errors="replace").strip()
        what = urllib.parse.urlsplit(url).path
        if resp.status == 401:
            return Unauthorized(f"{self.domain}: authentication required or credentials refused ({detail or 'unauthorized'}); log in with valid credentials")
        if resp.status == 403:
            return Unauthorized(f"{self.domain}: access to {what} denied ({detail or 'forbidden'})")
        if resp.status == 404:
            return NotFound(f"{self.domain}: {detail or 'not found'} ({what})")
        if resp.status in (400, 405):
            return InvalidArgument(f"{self.domain} refused {method} {what}: {detail or resp.status}")
        return RegistryError(f"registry {self.domain} answered {resp.status} to {method} {what}: {detail or 'no detail'}", resp.status)

    # -- API ------------------------------------------------------------------------------
    def ping(self) -> None:
        """`GET /v2/`: check reachability and credentials (what `docker login` does)."""
        self.request("GET", "/v2/", scope="").read()

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(body, content type, Docker-Content-Digest header) of a manifest or index."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull",
                            headers={"Accept": ACCEPT})
        body = resp.read()
        return body, resp.header("Content-Type").split(";")[0].strip(), resp.header("Docker-Content-Digest")

    def blob_exists(self, repo: str, digest: str, scope: str = "") -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope or f"repository:{repo}:pull", ok=(200, 404))
        resp.read()
        return resp.status == 200

    def open_blob(self, repo: str, digest: str, offset: int = 0) -> Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull",
                            headers=headers, ok=(200, 206))
        if offset and resp.status != 206:
            resp.read()
            raise RegistryError(f"registry {self.domain} cannot resume blob {digest} (no Range support)")
        return resp

    def mount_blob(self, repo: str, digest: str, source: str) -> bool:
        """Cross-repository mount: True if the registry linked the blob without an upload."""
        scope = f"repository:{repo}:pull,push repository:{source}:pull"
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={urllib.parse.quote(source)}",
                            scope=scope, body=b"", ok=(201, 202))
        resp.read()
        if resp.status == 202:  # the registry opened an upload instead; cancel it
            location = resp.header("Location")
            if location:
                self.request("DELETE", urllib.parse.urljoin(self.url("/"), location), scope=scope, ok=(204, 404, 200)).read()
        return resp.status == 201

    def upload_blob(self, repo: str, digest: str, size: int, open_at: Callable[[int], BinaryIO],
                    on_bytes: Callable[[int], None] | None = None, chunk: int = UPLOAD_CHUNK) -> None:
        """Chunked upload (POST, PATCH with Content-Range, PUT ?digest=), resuming after failures."""
        scope = f"repository:{repo}:pull,push"
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, body=b"", ok=(202,))
        resp.read()
        location = urllib.parse.urljoin(self.url("/"), resp.header("Location"))
        offset, failures = 0, 0
        while offset < size:
            end = min(offset + chunk, size)
            with open_at(offset) as f:
                data = f.read(end - offset)
            try:
                resp = self.request("PATCH", location, scope=scope, body=data, ok=(202,), headers={
                    "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end - 1}",
                    "Content-Length": str(len(data))})
                resp.read()
            except RegistryError:
                failures += 1
                if failures > RETRIES:
                    raise
                offset = self._upload_offset(location, scope)
                continue
            location = urllib.parse.urljoin(location, resp.header("Location") or location)
            if on_bytes:
                on_bytes(end - offset)
            offset = end
        sep = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", scope=scope, body=b"",
                     ok=(201,), headers={"Content-Length": "0"}).read()

    def _upload_offset(self, location: str, scope: str) -> int:
        """How many bytes of an upload the registry holds (`Range: 0-<last>`), to resume there."""
        resp = self.request("GET", location, scope=scope, ok=(204,))
        resp.read()
        rng = resp.header("Range")
        return int(rng.split("-")[1]) + 1 if "-" in rng else 0

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull,push",
                            body=body, headers={"Content-Type": media_type}, ok=(201,))
        resp.read()
        return resp.header("Docker-Content-Digest")


def is_connection_error(e: BaseException) -> bool:
    """For callers that stream a body themselves and want to resume on a dropped socket."""
    return isinstance(e, (OSError, http.client.HTTPException, socket.timeout))
