"""The DNS server on loopback: answers from the resolver, forwards the rest to a fake upstream."""
import socket
import struct
import threading

import pytest

from flotilla.runtime.network.dns import DnsServer, build_answer, build_ptr_answer, parse_query, read_upstreams, reverse_address


def query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def answers(reply: bytes) -> tuple[int, list[str]]:
    """(rcode, A addresses) of a reply built by build_answer or the fake upstream."""
    _id, flags, _qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", reply)
    off = 12
    while reply[off]:
        off += reply[off] + 1
    off += 5
    out = []
    for _ in range(an):
        off += 2
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", reply, off)
        off += 10
        if rtype == 1:
            out.append(socket.inet_ntoa(reply[off:off + rdlen]))
        off += rdlen
    return flags & 0xF, out


def test_parse_and_build_roundtrip():
    q = parse_query(query("Web.Example"))
    assert q is not None and q.name == "web.example" and q.qtype == 1
    rcode, addrs = answers(build_answer(q, ["198.51.100.2", "198.51.100.3"]))
    assert (rcode, addrs) == (0, ["198.51.100.2", "198.51.100.3"])
    aaaa = parse_query(query("web", qtype=28))
    assert answers(build_answer(aaaa, ["198.51.100.2"])) == (0, [])
    assert parse_query(b"\x00" * 5) is None
    assert parse_query(build_answer(q, [])) is None  # responses are not queries


def test_read_upstreams_skips_ipv6():
    assert read_upstreams("nameserver 127.0.0.53\nnameserver ::1\n#x\n") == [("127.0.0.53", 53)]


@pytest.fixture
def fake_upstream():
    """A loopback DNS server (UDP and TCP, one port) answering every A query with 203.0.113.99."""
    for attempt in range(20):  # the UDP port the kernel picks may be taken for TCP by a parallel run
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket()
        try:
            tcp.bind(udp.getsockname())
            break
        except OSError:
            udp.close()
            tcp.close()
            if attempt == 19:
                raise
    udp.settimeout(0.1)
    tcp.listen(4)
    tcp.settimeout(0.1)
    stop = threading.Event()
    seen: list[str] = []

    def serve_udp():
        while not stop.is_set():
            try:
                data, peer = udp.recvfrom(512)
            except socket.timeout:
                continue
            q = parse_query(data)
            seen.append(q.name)
            udp.sendto(build_answer(q, ["203.0.113.99"]), peer)

    def serve_tcp():
        while not stop.is_set():
            try:
                conn, _ = tcp.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(5)
                n = struct.unpack("!H", conn.recv(2))[0]
                q = parse_query(conn.recv(n))
                seen.append("tcp:" + q.name)
                answer = build_answer(q, ["203.0.113.98"])
                conn.sendall(struct.pack("!H", len(answer)) + answer)

    threads = [threading.Thread(target=f, daemon=True) for f in (serve_udp, serve_tcp)]
    for t in threads:
        t.start()
    yield udp.getsockname(), seen
    stop.set()
    for t in threads:
        t.join()
    udp.close()
    tcp.close()


def ask(port: int, name: str) -> tuple[int, list[str]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(5)
        c.sendto(query(name), ("127.0.0.1", port))
        return answers(c.recvfrom(4096)[0])


def test_server_answers_known_names_and_forwards_the_rest(fake_upstream):
    upstream, seen = fake_upstream
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # bound, never answers: the server must time out and move on
    table = {"web": ["198.51.100.2"]}
    server = DnsServer(lambda listen, client, name: table.get(name), [dead.getsockname(), upstream],
                       forwards_for=lambda listen: True, port=0, timeout=0.3)
    try:
        server.listen("127.0.0.1")
        port = server.port_of("127.0.0.1")
        assert ask(port, "web") == (0, ["198.51.100.2"])
        assert ask(port, "elsewhere.example") == (0, ["203.0.113.99"])
        assert seen == ["elsewhere.example"]
    finally:
        server.stop()
        dead.close()


def ask_tcp(port: int, names: list[str]) -> list[tuple[int, list[str]]]:
    """Several queries on one TCP connection, as resolvers do after a truncated UDP answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        for i, name in enumerate(names):
            q = query(name, ident=i)
            c.sendall(struct.pack("!H", len(q)) + q)
        out = []
        buf = b""
        while len(out) < len(names):
            buf += c.recv(4096)
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from("!H", buf)[0]:
                n = struct.unpack_from("!H", buf)[0]
                out.append(answers(buf[2:2 + n]))
                buf = buf[2 + n:]
        return out


def test_server_over_tcp_answers_and_forwards_over_tcp(fake_upstream):
    upstream, seen = fake_upstream
    server = DnsServer(lambda listen, client, name: {"web": ["198.51.100.2"]}.get(name), [upstream],
                       forwards_for=lambda listen: True, port=0)
    try:
        server.listen("127.0.0.1")
        got = ask_tcp(server.port_of("127.0.0.1"), ["web", "big.example"])
        assert sorted(got) == [(0, ["198.51.100.2"]), (0, ["203.0.113.98"])]
        assert seen == ["tcp:big.example"]
    finally:
        server.stop()


def test_server_without_forwarding_answers_servfail():
    server = DnsServer(lambda *a: None, [("127.0.0.1", 9)], forwards_for=lambda listen: False, port=0)
    try:
        server.listen("127.0.0.1")
        assert ask(server.port_of("127.0.0.1"), "x.example") == (2, [])
    finally:
        server.stop()


def test_a_stopped_server_ignores_listen_requests():
    server = DnsServer(lambda *a: None, [], forwards_for=lambda listen: False, port=0)
    server.listen("127.0.0.1")
    server.stop()
    server.listen("127.0.0.1")
    server.unlisten("127.0.0.1")
    assert server.listening() == set()


def test_reverse_lookups_of_container_addresses():
    assert reverse_address("2.100.51.198.in-addr.arpa") == "198.51.100.2"
    assert reverse_address("example.org") is None and reverse_address("1.2.3.in-addr.arpa") is None
    q = parse_query(query("2.100.51.198.in-addr.arpa", qtype=12))
    reply = build_ptr_answer(q, "web")
    assert reply.endswith(b"\x03web\x00") and struct.unpack_from("!H", reply, 6)[0] == 1
    server = DnsServer(lambda *a: None, [], forwards_for=lambda listen: False, port=0,
                       reverse=lambda listen, client, ip: "web" if ip == "198.51.100.2" else None)
    try:
        server.listen("127.0.0.1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.sendto(query("2.100.51.198.in-addr.arpa", qtype=12), ("127.0.0.1", server.port_of("127.0.0.1")))
            assert c.recvfrom(4096)[0].endswith(b"\x03web\x00")
            c.sendto(query("3.100.51.198.in-addr.arpa", qtype=12), ("127.0.0.1", server.port_of("127.0.0.1")))
            assert struct.unpack_from("!H", c.recvfrom(4096)[0], 2)[0] & 0xF == 2  # not ours, no forwarding
    finally:
        server.stop()
