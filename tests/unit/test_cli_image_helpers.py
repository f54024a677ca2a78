"""swarmctl's image helpers without an agent: progress rendering, build flags, the context tar."""
from __future__ import annotations

import io
import os
import tarfile
from types import SimpleNamespace

import pytest

from flotilla.swarmctl.building import context_tar, key_values
from flotilla.swarmctl.errors import CLIError
from flotilla.swarmctl.main import build_parser
from flotilla.swarmctl.progress import ProgressPrinter, bar


def ev(ident: str, status: str, current: int = 0, total: int = 0) -> SimpleNamespace:
    return SimpleNamespace(id=ident, status=status, current=current, total=total)


def test_plain_output_prints_a_line_per_status_change_only() -> None:
    out = io.StringIO()
    p = ProgressPrinter(out, tty=False)
    for e in [ev("aaa", "Downloading", 1, 10), ev("aaa", "Downloading", 5, 10), ev("bbb", "Waiting"),
              ev("aaa", "Pull complete"), ev("", "Digest: sha256:x")]:
        p.show(e)
    assert out.getvalue() == "aaa: Downloading\nbbb: Waiting\naaa: Pull complete\nDigest: sha256:x\n"


def test_tty_output_redraws_each_layer_on_its_own_line(monkeypatch) -> None:
    monkeypatch.setattr("shutil.get_terminal_size", lambda: os.terminal_size((200, 24)))
    out = io.StringIO()
    p = ProgressPrinter(out, tty=True)
    p.show(ev("aaa", "Waiting"))
    p.show(ev("bbb", "Waiting"))
    p.show(ev("aaa", "Downloading", 5, 10))
    text = out.getvalue()
    assert text.startswith("aaa: Waiting\nbbb: Waiting\n")
    # two lines up to aaa's line, clear it, redraw with a half bar, back down two lines
    assert text.endswith("\x1b[2A\r\x1b[2Kaaa: Downloading " + bar(5, 10) + "\r\x1b[2B")


def test_tty_bar_shrinks_to_the_terminal(monkeypatch) -> None:
    monkeypatch.setattr("shutil.get_terminal_size", lambda: os.terminal_size((40, 24)))
    out = io.StringIO()
    ProgressPrinter(out, tty=True).show(ev("abcdef012345", "Downloading", 1000, 2000))
    assert out.getvalue() == "abcdef012345: Downloading 1kB/2kB\n"  # no room for a bar: sizes only, no wrap


def test_bar() -> None:
    assert bar(0, 100) == "[" + " " * 50 + "] 0B/100B"
    assert bar(50, 100) == "[" + "=" * 24 + ">" + " " * 25 + "] 50B/100B"
    assert bar(100, 100) == "[" + "=" * 50 + "] 100B/100B"
    assert bar(2_000_000, 0) == "2MB"


def test_key_values(monkeypatch) -> None:
    monkeypatch.setenv("FROM_ENV", "e")
    assert key_values(["A=1", "B==2", "FROM_ENV", "UNSET_ONE"], "--build-arg") == {"A": "1", "B": "=2", "FROM_ENV": "e"}
    with pytest.raises(CLIError, match="expected KEY=VALUE"):
        key_values(["=x"], "--build-arg")
    with pytest.raises(CLIError, match="--label"):
        key_values(["nolabelvalue"], "--label")


def test_context_tar_leaves_out_dockerignored_files(tmp_path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print()\n")
    (tmp_path / "app" / "cache.pyc").write_text("x")
    (tmp_path / "secret.env").write_text("x")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / ".dockerignore").write_text("secret.env\n**/*.pyc\nDockerfile\n")
    (tmp_path / "link").symlink_to("/etc/passwd")
    with context_tar(str(tmp_path)) as spool, tarfile.open(fileobj=spool) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {".dockerignore", "Dockerfile", "app", "app/main.py", "link"}
    assert members["link"].issym() and members["link"].linkname == "/etc/passwd"  # sent as a link, never followed


def test_image_commands_parse_as_docker() -> None:
    parser = build_parser()
    args = parser.parse_args(["build", "-t", "a:1", "-t", "b", "-f", "x/Dockerfile", "--build-arg", "K=V",
                              "--no-cache", "--target", "stage", "."])
    assert (args.tag, args.file, args.build_arg, args.no_cache, args.target, args.context) == (
        ["a:1", "b"], "x/Dockerfile", ["K=V"], True, "stage", ".")
    args = parser.parse_args(["image", "pull", "--platform", "linux/arm64", "busybox"])
    assert (args.platform, args.reference) == ("linux/arm64", "busybox")
    args = parser.parse_args(["login", "-u", "me", "--password-stdin", "127.0.0.1:5000"])
    assert (args.username, args.password_stdin, args.server) == ("me", True, "127.0.0.1:5000")
    args = parser.parse_args(["save", "-o", "out.tar", "a", "b"])
    assert (args.output, args.images) == ("out.tar", ["a", "b"])
    args = parser.parse_args(["image", "prune", "-a", "-f"])
    assert args.all and args.force
    args = parser.parse_args(["run", "--pull", "never", "--rm", "img", "echo", "--pull"])
    assert args.pull == "never" and args.image == "img" and args.command == ["echo", "--pull"]


def test_swarmd_agent_takes_insecure_registries() -> None:
    from flotilla.swarmd.main import build_parser as swarmd_parser

    args = swarmd_parser().parse_args(["agent", "--insecure-registry", "10.0.0.5:5000", "--insecure-registry", "reg.lan"])
    assert args.insecure_registry == ["10.0.0.5:5000", "reg.lan"]
    assert swarmd_parser().parse_args(["agent"]).insecure_registry == []
