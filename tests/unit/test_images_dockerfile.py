"""Dockerfile parsing, variable expansion and .dockerignore, plus a hypothesis fuzz of the parser."""
from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flotilla.runtime.errors import InvalidArgument
from flotilla.runtime.imaging.dockerfile import IgnoreRules, expand, glob_match, pairs, parse, split_words

SAMPLE = """\
# syntax comment, not a directive after the first line
ARG BASE=busybox
FROM ${BASE}:latest AS Build
ARG VERSION
run echo one \\
  # a comment inside the continuation
  && echo two
COPY --from=other --chown=1000:1000 a "b c" /dst/
ADD ["x.tar", "/opt/"]
ENV A=1 B="two words" C=three\\ four
ENV LEGACY value with spaces
LABEL org.example.v="1.0" other=x
WORKDIR /app
USER 1000:1000
EXPOSE 80 53/udp
VOLUME ["/data"]
CMD ["sh", "-c", "echo hi"]
ENTRYPOINT exec app --flag

FROM scratch
COPY --from=build /app /app
"""


def test_sample_parses_into_stages() -> None:
    df = parse(SAMPLE)
    assert [i.args for i in df.meta_args] == [["BASE=busybox"]]
    first, second = df.stages
    assert (first.base, first.name, first.line) == ("${BASE}:latest", "build", 3)
    cmds = [(i.line, i.cmd) for i in first.instructions]
    assert cmds[:3] == [(4, "ARG"), (5, "RUN"), (8, "COPY")]
    run = first.instructions[1]
    assert run.args == ["echo one   && echo two"] and not run.json_form
    copy = first.instructions[2]
    assert copy.flags == {"from": "other", "chown": "1000:1000"} and copy.args == ["a", "b c", "/dst/"]
    add = first.instructions[3]
    assert add.json_form and add.args == ["x.tar", "/opt/"]
    env = first.instructions[4]
    assert pairs(env) == [("A", "1"), ("B", "two words"), ("C", "three four")]
    assert pairs(first.instructions[5]) == [("LEGACY", "value with spaces")]
    cmd = [i for i in first.instructions if i.cmd == "CMD"][0]
    assert cmd.json_form and cmd.args == ["sh", "-c", "echo hi"]
    ep = [i for i in first.instructions if i.cmd == "ENTRYPOINT"][0]
    assert not ep.json_form and ep.args == ["exec app --flag"]
    assert second.base == "scratch" and second.instructions[0].flags == {"from": "build"}
    assert df.stage("build") is first


def test_escape_directive_backtick() -> None:
    df = parse("# escape=`\nFROM a\nRUN echo a `\n  b\n")
    assert df.stages[0].instructions[0].args == ["echo a   b"]


@pytest.mark.parametrize("text,line,fragment", [
    ("FROM a\nFOO bar\n", 2, "unknown instruction: FOO"),
    ("RUN x\n", 1, "must begin with FROM"),
    ("# c\n\nFROM a\nCOPY onlyone\n", 4, "at least two"),
    ("FROM a\nCOPY --bogus=1 a b\n", 2, "unknown flag"),
    ("FROM a AS x\nFROM b AS x\n", 2, "duplicate stage"),
    ("FROM a as\n", 1, "expected FROM"),
    ("FROM a\nENV\n", 2, "at least one argument"),
    ("FROM a\nLABEL novalue\n", 2, "KEY=VALUE"),
    ("FROM a\nCOPY 'unterminated b\n", 2, "unterminated quote"),
    ("FROM a\nSHELL sh -c\n", 2, "JSON form"),
])
def test_parse_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse(text)
    assert str(e.value).startswith(f"Dockerfile:{line}:") and fragment in str(e.value)


def test_no_from_at_all() -> None:
    with pytest.raises(InvalidArgument, match="no FROM"):
        parse("# only a comment\nARG X=1\n")


def test_expand() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert expand("$A ${A} ${B:-dflt} ${A:+alt} ${B:+alt} \\$A $", env) == "1 1 dflt alt  $A $"
    assert expand("${EMPTY:-x}", env) == "x"
    with pytest.raises(InvalidArgument, match="bad substitution"):
        expand("${A", env, 3)


def test_split_words() -> None:
    assert split_words("a 'b c' \"d \\\" e\" f\\ g", 1) == ["a", "b c", 'd " e', "f g"]


def test_dockerignore() -> None:
    rules = IgnoreRules.parse("# comment\n*.md\n!README.md\n**/node_modules\nbuild/\n/tmp?\n")
    assert rules.ignored("a.md") and not rules.ignored("README.md")
    assert rules.ignored("x/y/node_modules/z.js") and rules.ignored("node_modules")
    assert rules.ignored("build/out.o") and rules.ignored("tmp1") and not rules.ignored("tmp12")
    assert not rules.ignored("src/a.py") and not rules.ignored("docs/a.md")
    assert glob_match("src/*.py", "src/a.py") and not glob_match("src/*.py", "src/x/a.py")


# -- fuzz: any text either parses or fails with InvalidArgument naming a line -----------------
_WORDS = st.sampled_from(["FROM", "from", "RUN", "COPY", "ADD", "ENV", "ARG", "CMD", "ENTRYPOINT", "LABEL", "EXPOSE",
                          "VOLUME", "WORKDIR", "USER", "SHELL", "STOPSIGNAL", "ONBUILD", "AS", "scratch", "busybox",
                          "--from=a", "--chown=1", "--platform=linux/arm64", "[\"a\"]", "[", "]", "\\", "#", "=", "A=1",
                          "'", "\"", "${A}", "$", "`", "\t", " ", "\n"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_WORDS, st.text(max_size=5)), max_size=30).map(" ".join))
@example("FROM a\nRUN \\\n")                 # continuation at end of file
@example("FROM a\nENV A\n")                 # legacy ENV without a value
@example("FROM a\nCOPY [\"a\"] \n")         # JSON form with too few arguments
@example("# escape=`\nFROM a `\n")          # escape char before EOF
@example("FROM\t\ta\n")                     # tab separator after the instruction
def test_parser_fuzz(text: str) -> None:
    try:
        df = parse(text)
    except InvalidArgument as e:
        assert str(e).startswith("Dockerfile")
        return
    assert df.stages
    for stage in df.stages:
        for inst in stage.instructions:
            assert inst.line >= stage.line


def test_healthcheck_and_onbuild_parsing() -> None:
    df = parse("FROM a\nHEALTHCHECK --timeout=3s CMD curl -f http://localhost/\nHEALTHCHECK NONE\n"
               "ONBUILD RUN echo hi\n")
    hc, none, onbuild = df.stages[0].instructions
    assert hc.args == ["CMD-SHELL", "curl -f http://localhost/"] and hc.flags == {"timeout": "3s"}
    assert none.args == ["NONE"] and onbuild.args == ["RUN echo hi"]
    for bad, fragment in (("HEALTHCHECK --interval=5x CMD true", "invalid duration"), ("HEALTHCHECK true", "expected HEALTHCHECK"),
                          ("ONBUILD FROM x", "not allowed"), ("ONBUILD BOGUS x", "unknown instruction")):
        with pytest.raises(InvalidArgument, match=fragment):
            parse(f"FROM a\n{bad}\n")
