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
forwarding. UDP and TCP (for replies that upstream truncated over UDP): a UDP query is
forwarded over UDP, a TCP query over TCP.
The server is one daemon thread around a selector; sockets are bound in the caller's thread so
that a bind error reaches the caller. TCP forwards block, so each runs in a short-lived thread.
"""
from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

QTYPE_A = 1
QTYPE_PTR = 12
QTYPE_ANY = 255
REVERSE_SUFFIX = ".in-addr.arpa"
RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 1, 2, 3
TTL = 600
_HDR = struct.Struct("!HHHHHH")

# resolver(listen_ip, client_ip, name) -> addresses, or None when the name is not a container's
Resolver = Callable[[str, str, str], "list[str] | None"]
# reverse(listen_ip, client_ip, address) -> the container's name, or None when it is no container's
Reverse = Callable[[str, str, str], "str | None"]


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


def build_ptr_answer(q: Question, target: str) -> bytes:
    """An authoritative answer with one PTR record naming `target`."""
    flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080
    rdata = b"".join(bytes([len(p)]) + p.encode() for p in target.split(".") if p) + b"\0"
    return (_HDR.pack(q.ident, flags, 1, 1, 0, 0) + q.raw
            + struct.pack("!HHHIH", 0xC00C, QTYPE_PTR, 1, TTL, len(rdata)) + rdata)


def reverse_address(name: str) -> str | None:
    """"4.3.2.1.in-addr.arpa" -> "1.2.3.4"; None for anything else."""
    if not name.endswith(REVERSE_SUFFIX):
        return None
    parts = name[: -len(REVERSE_SUFFIX)].split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return None
    return ".".join(reversed(parts))


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
    """A UDP query waiting for an upstream answer."""

    reply: Callable[[bytes], None]
    query: bytes
    question: Question
    upstream: int = -1
    deadline: float = 0.0
    sock: socket.socket | None = None


@dataclass
class _TcpClient:
    """A TCP connection from a container: length-prefixed queries, answered in order."""

    address: str
    peer: str
    deadline: float
    buf: bytes = b""


TCP_IDLE = 10.0


class DnsServer:
    """Answers container names on the gateway addresses it is told to listen on."""

    def __init__(self, resolver: Resolver, upstreams: list[tuple[str, int]],
                 forwards_for: Callable[[str], bool], port: int = 53, timeout: float = 2.0,
                 reverse: Reverse | None = None) -> None:
        self.resolver = resolver
        self.reverse = reverse
        self.upstreams = upstreams
        self.forwards_for = forwards_for
        self.port = port
        self.timeout = timeout
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._listeners: dict[str, tuple[socket.socket, socket.socket]] = {}
        self._changes: list[tuple[str, tuple[socket.socket, socket.socket] | None]] = []
        self._forwards: dict[socket.socket, _Forward] = {}
        self._clients: dict[socket.socket, _TcpClient] = {}
        self._ports: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = False
        self._thread: threading.Thread | None = None

    def listening(self) -> set[str]:
        return set(self._ports)

    def listen(self, address: str) -> None:
        """Start answering on address:port, UDP and TCP (bound here, so errors reach the caller).
        After stop() the server stays stopped: requests to listen are ignored."""
        if address in self._ports or self._stop:
            return
        for attempt in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                udp.bind((address, self.port))
                tcp.bind((address, udp.getsockname()[1]))
                tcp.listen(64)
                break
            except OSError as e:
                udp.close()
                tcp.close()
                # port 0 (tests): the UDP port the kernel picked may be taken for TCP; pick again
                if self.port != 0 or e.errno != errno.EADDRINUSE or attempt == 19:
                    raise
        self._ports[address] = udp.getsockname()[1]
        self._post(address, (udp, tcp))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="flotilla-dns", daemon=True)
            self._thread.start()

    def unlisten(self, address: str) -> None:
        if self._ports.pop(address, None) is not None and not self._stop:
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
        self._apply_changes()
        socks = [s for pair in self._listeners.values() for s in pair]
        socks += [f.sock for f in self._forwards.values() if f.sock] + list(self._clients)
        for sock in socks:
            sock.close()
        self._listeners.clear()
        self._forwards.clear()
        self._clients.clear()
        self._ports.clear()
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _post(self, address: str, socks: tuple[socket.socket, socket.socket] | None) -> None:
        with self._lock:
            self._changes.append((address, socks))
        os.write(self._wake_w, b"x")

    def _apply_changes(self) -> None:
        with self._lock:
            changes, self._changes = self._changes, []
        for address, socks in changes:
            old = self._listeners.pop(address, None)
            for sock in old or ():
                if not self._stop:
                    self._sel.unregister(sock)
                sock.close()
            if socks is not None:
                if self._stop:
                    socks[0].close()
                    socks[1].close()
                    continue
                self._listeners[address] = socks
                self._sel.register(socks[0], selectors.EVENT_READ, ("udp", address))
                self._sel.register(socks[1], selectors.EVENT_READ, ("accept", address))

    def _run(self) -> None:
        while not self._stop:
            self._apply_changes()
            now = time.monotonic()
            deadlines = [f.deadline for f in self._forwards.values()] + [c.deadline for c in self._clients.values()]
            wait = min(deadlines, default=now + 1.0) - now
            for key, _ in self._sel.select(max(0.0, wait)):
                kind = key.data[0] if key.data else "wake"
                if kind == "wake":
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                elif kind == "udp":
                    self._on_udp(key.fileobj, key.data[1])  # type: ignore[arg-type]
                elif kind == "accept":
                    self._on_accept(key.fileobj, key.data[1])  # type: ignore[arg-type]
                elif kind == "tcp":
                    self._on_tcp(key.fileobj)  # type: ignore[arg-type]
                else:
                    self._on_upstream(key.fileobj)  # type: ignore[arg-type]
            now = time.monotonic()
            for fwd in [f for f in self._forwards.values() if f.deadline <= now]:
                self._next_upstream(fwd)
            for sock in [s for s, c in self._clients.items() if c.deadline <= now]:
                self._drop_client(sock)

    def _lookup(self, address: str, client: str, q: Question) -> bytes | None:
        """The local answer, SERVFAIL when the query may not be forwarded, None to forward it."""
        try:
            ptr = reverse_address(q.name) if q.qtype == QTYPE_PTR and self.reverse else None
            target = self.reverse(address, client, ptr) if ptr and self.reverse else None
            found = None if ptr else self.resolver(address, client, q.name)
        except Exception:  # a resolver bug must not kill the server thread
            log.exception("dns resolver failed for %s", q.name)
            target = found = None
        if target is not None:
            return build_ptr_answer(q, target)
        if found is not None:
            return build_answer(q, found)
        if not self.upstreams or not self.forwards_for(address):
            return build_answer(q, [], RCODE_SERVFAIL)
        return None

    def _on_udp(self, sock: socket.socket, address: str) -> None:
        try:
            data, client = sock.recvfrom(4096)
        except (BlockingIOError, InterruptedError):
            return
        q = parse_query(data)
        if q is None:
            return

        def reply(answer: bytes) -> None:
            try:
                sock.sendto(answer, client)
            except OSError:
                pass
        answer = self._lookup(address, client[0], q)
        if answer is not None:
            reply(answer)
        else:
            self._next_upstream(_Forward(reply, data, q))

    def _next_upstream(self, fwd: _Forward) -> None:
        """Send a UDP query to the next upstream server, or answer SERVFAIL when none is left."""
        if fwd.sock is not None:
            self._sel.unregister(fwd.sock)
            fwd.sock.close()
            del self._forwards[fwd.sock]
            fwd.sock = None
        while True:
            fwd.upstream += 1
            if fwd.upstream >= len(self.upstreams):
                fwd.reply(build_answer(fwd.question, [], RCODE_SERVFAIL))
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
        fwd.reply(data)

    def _on_accept(self, listener: socket.socket, address: str) -> None:
        try:
            conn, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        self._clients[conn] = _TcpClient(address, peer[0], time.monotonic() + TCP_IDLE)
        self._sel.register(conn, selectors.EVENT_READ, ("tcp",))

    def _drop_client(self, sock: socket.socket) -> None:
        self._sel.unregister(sock)
        del self._clients[sock]
        sock.close()

    def _on_tcp(self, sock: socket.socket) -> None:
        client = self._clients[sock]
        try:
            data = sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client(sock)
            return
        client.buf += data
        client.deadline = time.monotonic() + TCP_IDLE
        while len(client.buf) >= 2 and len(client.buf) >= 2 + struct.unpack_from("!H", client.buf)[0]:
            n = struct.unpack_from("!H", client.buf)[0]
            query, client.buf = client.buf[2:2 + n], client.buf[2 + n:]
            q = parse_query(query)
            if q is None:
                self._drop_client(sock)
                return
            answer = self._lookup(client.address, client.peer, q)
            if answer is not None:
                _send_framed(sock, answer)
            else:
                threading.Thread(target=self._forward_tcp, args=(sock, query, q), daemon=True).start()

    def _forward_tcp(self, client: socket.socket, query: bytes, q: Question) -> None:
        """Relay one TCP query to the upstreams in turn (runs in its own thread: it blocks)."""
        for upstream in self.upstreams:
            try:
                with socket.create_connection(upstream, timeout=self.timeout) as up:
                    up.sendall(struct.pack("!H", len(query)) + query)
                    answer = _recv_framed(up)
            except OSError:
                continue
            _send_framed(client, answer)
            return
        _send_framed(client, build_answer(q, [], RCODE_SERVFAIL))


def _send_framed(sock: socket.socket, message: bytes) -> None:
    """Best effort: a client that went away or stopped reading loses its answer, nothing else."""
    try:
        sock.send(struct.pack("!H", len(message)) + message)
    except OSError:
        pass


def _recv_framed(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 2 or len(data) < 2 + struct.unpack_from("!H", data)[0]:
        chunk = sock.recv(65535)
        if not chunk:
            raise ConnectionError("upstream closed the connection")
        data += chunk
    return data[2:2 + struct.unpack_from("!H", data)[0]]
