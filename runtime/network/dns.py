"""The embedded DNS server of user-defined networks.

Where it listens, and why: Docker answers on 127.0.0.11 inside every container's namespace,
which needs a socket (and a NAT rule) per container. Flotilla listens once per network on the
bridge's gateway address, port 53, in the host namespace: no per-container work on the wiring
hot path, one socket per network, and forwarding goes out with the host's own resolvers
(including loopback ones such as systemd-resolved's 127.0.0.53, which a container could never
reach). The network a query arrived on, and the asking container's address there, select which
names it may see: names of containers that share a network with the asker.

Queries for names it does not know are forwarded, byte for byte, to the upstream servers (the
host's /etc/resolv.conf), one after the other with a timeout; internal networks get no
forwarding. UDP only: replies too large for UDP are relayed with their TC bit as upstream set it.
The server is one daemon thread around a selector; sockets are bound in the caller's thread so
that a bind error reaches the caller.
"""
from __future__ import annotations

import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

QTYPE_A = 1
QTYPE_ANY = 255
RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 1, 2, 3
TTL = 600
_HDR = struct.Struct("!HHHHHH")

# resolver(listen_ip, client_ip, name) -> addresses, or None when the name is not a container's
Resolver = Callable[[str, str, str], "list[str] | None"]


@dataclass(frozen=True)
class Question:
    ident: int
    flags: int
    name: str
    qtype: int
    raw: bytes  # the question section as received, echoed in the answer


def parse_query(data: bytes) -> Question | None:
    """The single question of a standard query; None for anything else (it is dropped)."""
    if len(data) < _HDR.size:
        return None
    ident, flags, qd, _an, _ns, _ar = _HDR.unpack_from(data)
    if flags & 0x8000 or (flags >> 11) & 0xF or qd != 1:
        return None
    labels, off = [], _HDR.size
    while True:
        if off >= len(data):
            return None
        n = data[off]
        off += 1
        if n == 0:
            break
        if n & 0xC0 or off + n > len(data):
            return None
        labels.append(data[off:off + n].decode("ascii", "replace"))
        off += n
    if off + 4 > len(data):
        return None
    qtype, _qclass = struct.unpack_from("!HH", data, off)
    return Question(ident, flags, ".".join(labels).lower(), qtype, data[_HDR.size:off + 4])


def build_answer(q: Question, addresses: list[str], rcode: int = RCODE_NOERROR) -> bytes:
    """An authoritative answer with A records (none for other query types: NODATA)."""
    answers = addresses if q.qtype in (QTYPE_A, QTYPE_ANY) else []
    flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode  # QR AA RD(copied) RA
    out = bytearray(_HDR.pack(q.ident, flags, 1, len(answers), 0, 0)) + q.raw
    for ip in answers:
        out += struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, TTL, 4) + socket.inet_aton(ip)
    return bytes(out)


def read_upstreams(resolv_conf_text: str) -> list[tuple[str, int]]:
    """IPv4 nameservers of a resolv.conf text."""
    out = []
    for line in resolv_conf_text.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] == "nameserver" and ":" not in f[1]:
            out.append((f[1], 53))
    return out


@dataclass
class _Forward:
    listener: socket.socket
    client: tuple[str, int]
    query: bytes
    question: Question
    upstream: int
    deadline: float
    sock: socket.socket = field(init=False)


class DnsServer:
    """Answers container names on the gateway addresses it is told to listen on."""

    def __init__(self, resolver: Resolver, upstreams: list[tuple[str, int]],
                 forwards_for: Callable[[str], bool], port: int = 53, timeout: float = 2.0) -> None:
        self.resolver = resolver
        self.upstreams = upstreams
        self.forwards_for = forwards_for
        self.port = port
        self.timeout = timeout
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._listeners: dict[str, socket.socket] = {}
        self._changes: list[tuple[str, socket.socket | None]] = []
        self._forwards: dict[socket.socket, _Forward] = {}
        self._ports: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = False
        self._thread: threading.Thread | None = None

    def listening(self) -> set[str]:
        return set(self._ports)

    def listen(self, address: str) -> None:
        """Start answering on address:port (bound here, so errors reach the caller)."""
        if address in self.listening():
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.bind((address, self.port))
        except OSError:
            sock.close()
            raise
        self._ports[address] = sock.getsockname()[1]
        self._post(address, sock)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="flotilla-dns", daemon=True)
            self._thread.start()

    def unlisten(self, address: str) -> None:
        self._ports.pop(address, None)
        self._post(address, None)

    def port_of(self, address: str) -> int:
        """The port bound on `address` (differs from `port` only when that is 0, in tests)."""
        return self._ports[address]

    def stop(self) -> None:
        """Close every socket and end the thread."""
        self._stop = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        else:
            self._apply_changes()
        for sock in list(self._listeners.values()) + [f.sock for f in self._forwards.values()]:
            sock.close()
        self._listeners.clear()
        self._forwards.clear()
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _post(self, address: str, sock: socket.socket | None) -> None:
        with self._lock:
            self._changes.append((address, sock))
        os.write(self._wake_w, b"x")

    def _apply_changes(self) -> None:
        with self._lock:
            changes, self._changes = self._changes, []
        for address, sock in changes:
            old = self._listeners.pop(address, None)
            if old is not None:
                self._sel.unregister(old)
                old.close()
            if sock is not None:
                self._listeners[address] = sock
                self._sel.register(sock, selectors.EVENT_READ, ("listen", address))

    def _run(self) -> None:
        while not self._stop:
            self._apply_changes()
            now = time.monotonic()
            wait = min((f.deadline for f in self._forwards.values()), default=now + 1.0) - now
            for key, _ in self._sel.select(max(0.0, wait)):
                if key.data is None:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                elif key.data[0] == "listen":
                    self._on_query(key.fileobj, key.data[1])  # type: ignore[arg-type]
                else:
                    self._on_upstream(key.fileobj)  # type: ignore[arg-type]
            now = time.monotonic()
            for fwd in [f for f in self._forwards.values() if f.deadline <= now]:
                self._next_upstream(fwd)

    def _on_query(self, sock: socket.socket, address: str) -> None:
        try:
            data, client = sock.recvfrom(4096)
        except (BlockingIOError, InterruptedError):
            return
        q = parse_query(data)
        if q is None:
            return
        try:
            found = self.resolver(address, client[0], q.name)
        except Exception:  # a resolver bug must not kill the server thread
            log.exception("dns resolver failed for %s", q.name)
            found = None
        if found is not None:
            sock.sendto(build_answer(q, found), client)
        elif not self.upstreams or not self.forwards_for(address):
            sock.sendto(build_answer(q, [], RCODE_SERVFAIL), client)
        else:
            fwd = _Forward(sock, client, data, q, -1, 0.0)
            self._next_upstream(fwd)

    def _next_upstream(self, fwd: _Forward) -> None:
        """Send the query to the next upstream server, or answer SERVFAIL when none is left."""
        if fwd.upstream >= 0:
            self._sel.unregister(fwd.sock)
            fwd.sock.close()
            del self._forwards[fwd.sock]
        while True:
            fwd.upstream += 1
            if fwd.upstream >= len(self.upstreams):
                fwd.listener.sendto(build_answer(fwd.question, [], RCODE_SERVFAIL), fwd.client)
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            try:
                sock.connect(self.upstreams[fwd.upstream])
                sock.send(fwd.query)
            except OSError:
                sock.close()
                continue
            fwd.sock = sock
            fwd.deadline = time.monotonic() + self.timeout
            self._forwards[sock] = fwd
            self._sel.register(sock, selectors.EVENT_READ, ("upstream",))
            return

    def _on_upstream(self, sock: socket.socket) -> None:
        fwd = self._forwards.get(sock)
        if fwd is None:
            return
        try:
            data = sock.recv(65535)
        except OSError:  # e.g. ICMP port unreachable from that upstream: try the next one
            self._next_upstream(fwd)
            return
        if len(data) < 2 or data[:2] != fwd.query[:2]:
            return
        self._sel.unregister(sock)
        sock.close()
        del self._forwards[sock]
        fwd.listener.sendto(data, fwd.client)
