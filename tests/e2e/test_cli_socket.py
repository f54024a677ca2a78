"""The agent's CLI socket end to end: where it is, who may use it, hostile input against the real
agent, and the gRPC fallback giving the same output, messages and exit codes.

The other e2e CLI tests already run every command over the CLI socket (swarmctl's default when
the socket exists); here FLOTILLA_TRANSPORT=grpc runs a sample of them over gRPC as well.
"""
from __future__ import annotations

import socket
import stat
import struct

import pytest

from cli_harness import IMAGE, agent, ctl, drive_pty, wait_for  # noqa: F401  (fixtures)
from flotilla.proto import framing

pytestmark = pytest.mark.root


def cli_socket(agent):
    return agent.socket.with_name(agent.socket.name + ".cli")


def test_the_cli_socket_sits_next_to_the_grpc_socket_with_its_mode(agent):
    path = cli_socket(agent)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(agent.socket.stat().st_mode) == 0o660


@pytest.mark.parametrize("transport", ["cli", "grpc"])
def test_output_errors_and_exit_codes_match_on_both_transports(agent, ctl, transport):
    env = {**agent.env, "FLOTILLA_TRANSPORT": transport}
    agent.env, saved = env, agent.env
    try:
        res = ctl("run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
        assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
        res = ctl("run", "--rm", IMAGE, "nosuchcmd", check=False)
        assert res.returncode == 127
        assert res.stderr == 'Error response from daemon: exec: "nosuchcmd": executable file not found in $PATH\n'
        res = ctl("stop", "nosuch", "alsonot", check=False)
        assert res.returncode == 1
        assert res.stderr.splitlines() == ["Error response from daemon: no such container: nosuch",
                                           "Error response from daemon: no such container: alsonot"]
        cid = ctl("run", "-d", IMAGE, "sh", "-c", "echo logged; sleep 30").stdout.strip()
        wait_for(lambda: ctl("logs", cid).stdout == "logged\n", what="the log line")
        assert ctl("exec", cid, "sh", "-c", "echo in; exit 4", check=False).returncode == 4
        assert ctl("run", "-i", "--rm", IMAGE, "cat", input="piped\n").stdout == "piped\n"
    finally:
        agent.env = saved


def test_interactive_tty_over_grpc_too(agent, ctl, monkeypatch):
    monkeypatch.setenv("FLOTILLA_TRANSPORT", "grpc")
    output, code = drive_pty(agent, ["run", "-it", "--rm", IMAGE, "sh"], b"echo hi; exit 3\r")
    assert code == 3 and b"hi" in output


def test_the_cli_socket_can_be_named_directly(agent, ctl):
    res = ctl("-H", f"unix://{cli_socket(agent)}", "run", "--rm", IMAGE, "echo", "direct")
    assert res.stdout == "direct\n"


@pytest.mark.parametrize("data, message", [
    (framing.encode(framing.CALL, b"Nope") + framing.encode(framing.MESSAGE), "unknown method 'Nope'"),
    (struct.pack(">IB", 0xFFFFFFFF, framing.CALL), "over the limit"),
    (struct.pack(">IB", 64, framing.CALL) + b"Run", "truncated frame"),
    (framing.encode(framing.CALL, b"RemoveContainer") + framing.encode(framing.MESSAGE, b"\x0a\xff"),
     "cannot parse the RemoveContainer request"),
    (framing.encode(framing.CALL, b"Run") + framing.encode(framing.MESSAGE, b"\x22\x01x"),
     "the first message must carry the container spec"),
])
def test_hostile_input_against_the_real_agent(agent, ctl, data, message):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(cli_socket(agent)))
        s.sendall(data)
        if message == "truncated frame":
            s.shutdown(socket.SHUT_WR)  # the end of input is what makes a frame truncated
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    length, kind = framing.HEADER.unpack_from(received)
    assert kind == framing.STATUS
    _, details, _ = framing.decode_status(received[framing.HEADER.size:framing.HEADER.size + length])
    assert message in details and "\n" not in details
    assert ctl("ps").returncode == 0  # the agent is still serving


def test_a_killed_agent_leaves_a_stale_socket_that_reads_as_down(agent, ctl):
    agent.kill9()
    try:
        assert cli_socket(agent).exists()
        res = ctl("ps", check=False)
        assert res.returncode == 1
        assert res.stderr == f"Cannot connect to the Flotilla agent at unix://{agent.socket}. Is the agent running?\n"
    finally:
        agent.start()  # claims the stale sockets again
    assert ctl("ps").returncode == 0


@pytest.mark.parametrize("transport", ["cli", "grpc"])
def test_detach_keys_leave_the_container_running(agent, ctl, monkeypatch, transport):
    """Ctrl-P Ctrl-Q cancels the call (a socket shutdown on the CLI socket): the container lives on."""
    monkeypatch.setenv("FLOTILLA_TRANSPORT", transport)
    name = f"detach-{transport}-{agent.suffix}"
    output, code = drive_pty(agent, ["run", "-it", "--name", name, IMAGE, "sh"], b"\x10\x11")
    assert code == 0, output
    assert agent.status(name) == "running"
    assert ctl("exec", name, "echo", "alive").stdout == "alive\n"
