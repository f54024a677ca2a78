"""Dockerfile parsing: instructions, stages, quoting, variables, `.dockerignore`.

The parser follows Docker's (moby/buildkit `frontend/dockerfile/parser`): a `# escape=`
directive, `\\` line continuations (comment lines inside a continuation are skipped),
comments, instruction names in any case, JSON (exec) form for RUN/CMD/ENTRYPOINT/SHELL/
COPY/ADD/VOLUME, `--flag=value` options. Variables (`$A`, `${A}`, `${A:-x}`, `${A:+x}`) are
expanded by the builder with `expand()`, because their values depend on ARG/ENV at that step.
Every error names the Dockerfile line, so a user can go straight to it.
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field

from ..errors import InvalidArgument

INSTRUCTIONS = {"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "CMD", "ENTRYPOINT", "EXPOSE",
                "LABEL", "VOLUME", "STOPSIGNAL", "SHELL", "MAINTAINER", "HEALTHCHECK", "ONBUILD"}
JSON_FORMS = {"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"}
FLAGS = {"FROM": {"platform"}, "COPY": {"from", "chown", "chmod"}, "ADD": {"chown", "chmod"}, "RUN": set(),
         "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"}}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class Instruction:
    """One instruction: `cmd` upper-case, `args` its words (or the raw rest for shell form)."""

    line: int
    cmd: str
    args: list[str]
    flags: dict[str, str] = field(default_factory=dict)
    json_form: bool = False
    original: str = ""

    def error(self, message: str) -> InvalidArgument:
        return InvalidArgument(f"Dockerfile:{self.line}: {self.cmd}: {message}")


@dataclass
class Stage:
    """A FROM and what follows it, up to the next FROM."""

    index: int
    base: str
    name: str
    platform: str
    line: int
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    """Meta ARGs (before the first FROM) and the build stages in order."""

    meta_args: list[Instruction]
    stages: list[Stage]

    def stage(self, target: str) -> Stage:
        for st in self.stages:
            if st.name == target.lower():
                return st
        raise InvalidArgument(f"target stage {target!r} could not be found in the Dockerfile")


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuations; returns (first physical line number, joined text) per instruction."""
    lines = text.replace("\r\n", "\n").split("\n")
    escape = "\\"
    start = 0
    for i, raw in enumerate(lines):  # parser directives: only at the very top
        m = _DIRECTIVE_RE.match(raw)
        if not m:
            break
        if m.group(1).lower() == "escape":
            if m.group(2) not in ("\\", "`"):
                raise InvalidArgument(f"Dockerfile:{i + 1}: invalid escape directive {m.group(2)!r}: use \\ or `")
            escape = m.group(2)
        start = i + 1
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    first = 0
    for i in range(start, len(lines)):
        stripped = lines[i].strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and (stripped.startswith("#") or not stripped):
            continue  # comment or empty line inside a continuation
        if not buf:
            first = i + 1
        line = lines[i].rstrip()
        if line.endswith(escape) and not line.endswith(escape * 2):
            buf.append(line[:-1])
            continue
        buf.append(line)
        out.append((first, "".join(buf).strip()))
        buf = []
    if buf:
        out.append((first, "".join(buf).strip()))
    return out


def split_words(text: str, line: int, escape: str = "\\") -> list[str]:
    """Split on whitespace honouring single/double quotes and the escape char (Docker's word rules)."""
    words: list[str] = []
    cur: list[str] = []
    quote = ""
    in_word = False
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == escape and quote == '"' and i + 1 < len(text) and text[i + 1] in ('"', escape):
                i += 1
                cur.append(text[i])
            else:
                cur.append(c)
        elif c in "\"'":
            quote, in_word = c, True
        elif c == escape and i + 1 < len(text):
            i += 1
            cur.append(text[i])
            in_word = True
        elif c.isspace():
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        else:
            cur.append(c)
            in_word = True
        i += 1
    if quote:
        raise InvalidArgument(f"Dockerfile:{line}: unterminated quote {quote}")
    if in_word:
        words.append("".join(cur))
    return words


def _json_args(rest: str) -> list[str] | None:
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None  # Docker falls back to the shell form
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def parse_instruction(line: int, text: str) -> Instruction:
    word, _, rest = text.partition(" ")
    cmd = word.upper()
    rest = rest.strip()
    if "\t" in word:
        word, _, more = word.partition("\t")
        cmd, rest = word.upper(), (more + " " + rest).strip()
    if cmd not in INSTRUCTIONS:
        raise InvalidArgument(f"Dockerfile:{line}: unknown instruction: {word}")
    flags: dict[str, str] = {}
    while cmd in FLAGS and rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        rest = rest.strip()
        name, eq, value = token[2:].partition("=")
        if name not in FLAGS[cmd] or not eq:
            allowed = ", ".join(f"--{f}=..." for f in sorted(FLAGS[cmd])) or "none"
            raise InvalidArgument(f"Dockerfile:{line}: {cmd}: unknown flag {token!r} (allowed: {allowed})")
        flags[name] = value
    inst = Instruction(line=line, cmd=cmd, args=[], flags=flags, original=text)
    if cmd in JSON_FORMS and (parsed := _json_args(rest)) is not None:
        inst.args, inst.json_form = parsed, True
    elif cmd in ("RUN", "CMD", "ENTRYPOINT", "MAINTAINER", "STOPSIGNAL", "USER", "WORKDIR"):
        inst.args = [rest] if rest else []
    elif cmd == "SHELL":
        raise inst.error("SHELL requires the JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]")
    elif cmd == "HEALTHCHECK":
        inst.args, inst.json_form = _healthcheck_args(inst, rest)
    elif cmd == "ONBUILD":
        inner = rest.split(None, 1)[0].upper() if rest else ""
        if inner in ("ONBUILD", "FROM", "MAINTAINER"):
            raise inst.error(f"{inner} is not allowed as an ONBUILD trigger")
        if rest:
            parse_instruction(line, rest)  # a bad trigger is an error now, not when someone builds FROM this image
        inst.args = [rest] if rest else []
    else:
        inst.args = split_words(rest, line)
    _check(inst)
    return inst


def _healthcheck_args(inst: Instruction, rest: str) -> tuple[list[str], bool]:
    """`NONE` -> ["NONE"]; `CMD ["a", "b"]` -> ["CMD", "a", "b"]; `CMD a b` -> ["CMD-SHELL", "a b"]."""
    word, _, command = rest.partition(" ")
    if word.upper() == "NONE" and not command.strip() and not inst.flags:
        return ["NONE"], False
    if word.upper() != "CMD" or not command.strip():
        raise inst.error("expected HEALTHCHECK [options] CMD command, or HEALTHCHECK NONE")
    for flag in ("interval", "timeout", "start-period", "start-interval"):
        if flag in inst.flags:
            duration_ns(inst.flags[flag], inst)
    if "retries" in inst.flags and not inst.flags["retries"].isdigit():
        raise inst.error(f"--retries={inst.flags['retries']}: give a whole number")
    parsed = _json_args(command.strip())
    return (["CMD", *parsed], True) if parsed is not None else (["CMD-SHELL", command.strip()], False)


def duration_ns(text: str, inst: Instruction) -> int:
    """A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds, as the image config stores it."""
    pos, total = 0, 0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += int(float(m.group(1)) * _DURATION_NS[m.group(2)])
        pos = m.end()
    if not text or pos != len(text):
        raise inst.error(f"invalid duration {text!r}: use e.g. 30s, 1m30s, 500ms")
    return total


def _check(inst: Instruction) -> None:
    n = len(inst.args)
    need_some = {"RUN", "ENV", "ARG", "WORKDIR", "USER", "EXPOSE", "LABEL", "VOLUME", "STOPSIGNAL", "MAINTAINER", "SHELL",
                 "ONBUILD"}
    if inst.cmd in need_some and n == 0:
        raise inst.error("requires at least one argument")
    if inst.cmd in ("COPY", "ADD") and n < 2:
        raise inst.error("requires at least two arguments: source(s) and destination")
    if inst.cmd == "FROM":
        if n not in (1, 3) or (n == 3 and inst.args[1].lower() != "as"):
            raise inst.error("expected FROM [--platform=...] image [AS name]")
        if n == 3 and not re.match(r"^[a-z][a-z0-9._-]*$", inst.args[2].lower()):
            raise inst.error(f"invalid stage name {inst.args[2]!r}: use letters, digits, '.', '_' and '-', starting with a letter")
    if inst.cmd == "ARG" and n != 1:
        raise inst.error("ARG takes exactly one NAME[=default]")
    if inst.cmd in ("ENV", "LABEL"):
        pairs(inst)


def pairs(inst: Instruction) -> list[tuple[str, str]]:
    """ENV/LABEL arguments as (key, value): `K=V K2=V2` or the legacy `K value with spaces`."""
    if "=" not in inst.args[0]:
        if inst.cmd == "LABEL" or len(inst.args) < 2:
            raise inst.error(f"{inst.cmd} needs KEY=VALUE pairs" + (" (or KEY VALUE)" if inst.cmd == "ENV" else ""))
        return [(inst.args[0], " ".join(inst.args[1:]))]
    out = []
    for word in inst.args:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise inst.error(f"{word!r} is not KEY=VALUE")
        out.append((key, value))
    return out


def parse(text: str) -> Dockerfile:
    """Parse a whole Dockerfile into meta ARGs and stages."""
    meta: list[Instruction] = []
    stages: list[Stage] = []
    for line, body in _logical_lines(text):
        inst = parse_instruction(line, body)
        if inst.cmd == "FROM":
            name = inst.args[2].lower() if len(inst.args) == 3 else ""
            if name and any(s.name == name for s in stages):
                raise inst.error(f"duplicate stage name {name!r}")
            stages.append(Stage(len(stages), inst.args[0], name, inst.flags.get("platform", ""), line))
        elif not stages:
            if inst.cmd != "ARG":
                raise inst.error("the Dockerfile must begin with FROM (only ARG may come before it)")
            meta.append(inst)
        else:
            stages[-1].instructions.append(inst)
    if not stages:
        raise InvalidArgument("Dockerfile: no FROM instruction: the file has no build stage")
    return Dockerfile(meta, stages)


def expand(text: str, env: dict[str, str], line: int = 0) -> str:
    """Substitute `$A`, `${A}`, `${A:-default}`, `${A:+alt}`; `\\$` stays a literal `$`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if text[i] == "$":
            m = _VAR_RE.match(text, i)
            if m is None:
                if text.startswith("${", i):
                    raise InvalidArgument(f"Dockerfile:{line}: bad substitution in {text!r}")
                out.append("$")
                i += 1
                continue
            name = m.group(1) or m.group(4)
            value = env.get(name)
            if m.group(2) == ":-":
                value = value if value else m.group(3)
            elif m.group(2) == ":+":
                value = m.group(3) if value else ""
            out.append(value or "")
            i = m.end()
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


# -- .dockerignore ----------------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match syntax plus `**` (any number of directories), as Docker uses it."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i)
            if j < 0:
                raise InvalidArgument(f".dockerignore: bad pattern {pattern!r}: unterminated [")
            cls = pattern[i + 1:j].replace("\\", "\\\\")
            out.append("[" + ("^" + cls[1:] if cls.startswith("^") else cls) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "(?:/.*)?$")


@dataclass
class IgnoreRules:
    """Parsed `.dockerignore`: later rules win; `!pattern` re-includes."""

    rules: list[tuple[re.Pattern[str], bool]]

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:].strip() if negate else line
            pattern = "/".join(p for p in pattern.split("/") if p not in ("", "."))
            if pattern:
                rules.append((_pattern_regex(pattern), negate))
        return cls(rules)

    def ignored(self, path: str) -> bool:
        """Whether `path` (relative to the context, `/`-separated) is excluded."""
        result = False
        for regex, negate in self.rules:
            if regex.match(path):
                result = not negate
        return result


def has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def glob_match(pattern: str, name: str) -> bool:
    """COPY source wildcards: one path component at a time, `/` never matched by `*`."""
    pparts, nparts = pattern.split("/"), name.split("/")
    return len(pparts) == len(nparts) and all(fnmatch.fnmatchcase(n, p) for p, n in zip(pparts, nparts))
