"""Shared helpers of the image tests: a real `docker-registry` on loopback, image builders.

Imported by tests/*/test_images_*.py (the tests/ dir is on sys.path because of conftest.py).
The registry is Debian's docker-registry (distribution 2.8) on a free 127.0.0.1 port with its
storage in the test's tmp dir; it is killed and its files removed when the test ends.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import bcrypt

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Registry:
    """A running registry: `host` is `127.0.0.1:<port>`, `storage` its blob directory."""

    host: str
    storage: Path
    proc: subprocess.Popen
    user: str = ""
    password: str = ""


def make_cert(tmp: Path, name: str = "registry") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (CA and server cert in one), made with openssl."""
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@contextmanager
def run_registry(tmp: Path, htpasswd_user: tuple[str, str] | None = None, tls: tuple[Path, Path] | None = None) -> Iterator[Registry]:
    """Start docker-registry on loopback (optionally with htpasswd basic auth, TLS); stop it after."""
    port = free_port()
    storage = tmp / "registry-storage"
    storage.mkdir()
    auth = ""
    if htpasswd_user:
        user, password = htpasswd_user
        entry = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (tmp / "htpasswd").write_text(f"{user}:{entry}\n")
        auth = f"auth:\n  htpasswd:\n    realm: flotilla-test\n    path: {tmp / 'htpasswd'}\n"
    config = tmp / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + (f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else "") + auth)
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "registry.log", "wb"), start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401 with auth: it is up
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {(tmp / 'registry.log').read_text()}")
                time.sleep(0.05)
        yield Registry(f"127.0.0.1:{port}", storage, proc, *(htpasswd_user or ("", "")))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert processes_mentioning(str(config)) == [], "docker-registry outlived its test"


def skopeo(*args: str) -> str:
    """Run skopeo with loopback-only, no-TLS settings; returns stdout."""
    return subprocess.run(["skopeo", "--insecure-policy", *args], check=True, capture_output=True, text=True).stdout


def tar_bytes(files: dict[str, bytes | None]) -> bytes:
    """A layer tar: name -> content (None: a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_oci_layout(dest: Path, layers: list[bytes], config_extra: dict | None = None, compress: str = "gzip",
                     tag: str = "latest", arch: str = "amd64") -> dict:
    """An OCI image layout dir (what skopeo copies from) with the given plain layer tars."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        d = sha(data)
        (blobs / d[7:]).write_bytes(data)
        return d

    descs, diff_ids = [], []
    for plain in layers:
        diff_ids.append(sha(plain))
        if compress == "gzip":
            body, mt = gzip.compress(plain, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
        elif compress == "zstd":
            import zstandard
            body, mt = zstandard.ZstdCompressor().compress(plain), "application/vnd.oci.image.layer.v1.tar+zstd"
        else:
            body, mt = plain, "application/vnd.oci.image.layer.v1.tar"
        descs.append({"mediaType": mt, "digest": put(body), "size": len(body)})
    config = {"architecture": arch, "os": "linux", "created": "2026-11-22T00:00:00Z",
              "config": {"Env": ["PATH=/bin"], **(config_extra or {})},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}
    cfg = json.dumps(config).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(cfg), "size": len(cfg)},
                "layers": descs}
    mbytes = json.dumps(manifest).encode()
    mdigest = put(mbytes)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [{"mediaType": manifest["mediaType"], "digest": mdigest, "size": len(mbytes),
                                                "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (dest / "index.json").write_text(json.dumps(index))
    return {"manifest_digest": mdigest, "config_digest": sha(cfg), "diff_ids": diff_ids}


def store_listing(root: Path) -> dict[str, list[str]]:
    """Everything the image store holds (blobs, layers, images.json), to compare before/after."""
    out = {"blobs": sorted(p.name for p in (root / "blobs" / "sha256").iterdir()),
           "layers": sorted(p.name for p in (root / "layers").iterdir())}
    meta = root / "images.json"
    out["meta"] = [meta.read_text()] if meta.exists() else []
    return out


def write_index_layout(dest: Path, images: list[tuple[list[bytes], str]], tag: str = "latest") -> dict:
    """An OCI layout whose tag points to an index with one image per (layers, arch)."""
    entries = []
    for layers, arch in images:
        sub = write_oci_layout(dest, layers, arch=arch, config_extra={"Labels": {"arch": arch}})
        mbytes = (dest / "blobs" / "sha256" / sub["manifest_digest"][7:]).read_bytes()
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sub["manifest_digest"],
                        "size": len(mbytes), "platform": {"os": "linux", "architecture": arch, **({"variant": "v8"} if arch == "arm64" else {})}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}).encode()
    idigest = sha(index)
    (dest / "blobs" / "sha256" / idigest[7:]).write_bytes(index)
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": idigest, "size": len(index),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return {"index_digest": idigest, "manifests": [e["digest"] for e in entries]}


class FaultProxy:
    """A loopback HTTP proxy in front of a registry that answers 500 (or drops the connection)
    for requests matching `rule(method, path)` while `failures` lasts; -1 means forever."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import http.server
        import threading

        self.upstream = upstream
        self.rule = lambda method, path: False
        self.failures = 0
        self.mode = "500"
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _do(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append((self.command, self.path))
                if proxy.rule(self.command, self.path) and proxy.failures != 0:
                    proxy.failures -= 1 if proxy.failures > 0 else 0
                    if proxy.mode == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    msg = b'{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}'
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST", "PATCH") else None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        if k.lower() == "location":
                            v = v.replace(proxy.upstream, proxy.host)
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _do

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def registry_blob_path(storage: Path, digest: str) -> Path:
    """Where docker-registry's filesystem driver keeps a blob's bytes."""
    hexd = digest[7:]
    return storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"


def _b64url(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A loopback token service as Docker Hub runs one: basic auth in, RS256 JWT bearer token out.

    docker-registry verifies the token with the certificate in `cert` (its rootcertbundle);
    the JWT is signed with `openssl dgst -sha256 -sign`, so no crypto library is needed.
    """

    def __init__(self, tmp: Path, user: str, password: str) -> None:
        import base64
        import http.server
        import threading
        import urllib.parse

        self.key, self.cert = tmp / "token.key", tmp / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key), "-out",
                        str(self.cert), "-days", "1", "-subj", "/CN=flotilla-test-token"], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[str] = []
        server = self
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                server.requests.append(self.path)
                auth = self.headers.get("Authorization")
                if auth is not None and auth != expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                access = []
                if auth == expected:  # anonymous callers get a token that grants nothing
                    for scope in query.get("scope", []):
                        for part in scope.split(" "):
                            kind, _, rest = part.partition(":")
                            name, _, actions = rest.rpartition(":")
                            access.append({"type": kind, "name": name, "actions": actions.split(",")})
                body = json.dumps({"token": server.sign(query.get("service", [""])[0], access)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sign(self, service: str, access: list) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        claims = {"iss": "flotilla-test-issuer", "sub": "alice", "aud": service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@contextmanager
def run_token_registry(tmp: Path, user: str, password: str) -> Iterator[tuple[Registry, TokenServer]]:
    """docker-registry with bearer-token auth backed by a TokenServer, both on loopback."""
    tokens = TokenServer(tmp, user, password)
    port = free_port()
    storage = tmp / "registry-storage"
    storage.mkdir()
    config = tmp / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  token:\n    realm: {tokens.realm}\n    service: flotilla-registry\n    issuer: flotilla-test-issuer\n"
        f"    rootcertbundle: {tokens.cert}\n")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "registry.log", "wb"), start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {(tmp / 'registry.log').read_text()}")
                time.sleep(0.05)
        yield Registry(f"127.0.0.1:{port}", storage, proc, user, password), tokens
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        tokens.close()


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions `text` (leak check for shims and registries of a test)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found
