"""Vmfile parsing: Dockerfile syntax, ARG/ENV substitution, one error line naming the line."""

import pytest
from hypothesis import given, strategies as st

from vmctl.vmfile.parse import VmfileError, parse

GOOD = r"""
# a web server image
ARG BASE=tiny
FROM ${BASE}
ARG GREETING=hello
ENV APP_DIR=/srv/app \
    MODE=prod
WORKDIR $APP_DIR
COPY --chown=web:web index.html conf/ ./
RUN --root apk add busybox-extras || true
RUN echo "$GREETING" > greeting.txt
RUN ["sh", "-c", "echo exec form"]
USER web
LABEL org.example.role=web version=1
EXPOSE 8080 53/udp
CMD ["httpd", "-f", "-p", "8080"]
"""


def test_a_complete_file():
    vf = parse(GOOD, build_args={"GREETING": "hi"})
    assert vf.base == "tiny"
    kinds = [s.keyword for s in vf.steps]
    assert kinds == ["ENV", "WORKDIR", "COPY", "RUN", "RUN", "RUN", "USER", "LABEL", "EXPOSE", "CMD"]
    env, workdir, copy, root_run, run, exec_run, user, label, expose, cmd = vf.steps
    assert dict(env.args) == {"APP_DIR": "/srv/app", "MODE": "prod"}
    assert workdir.args == ("/srv/app",)
    assert copy.args == (("index.html", "conf/"), "/srv/app", "web:web", True) and copy.line == 9
    assert root_run.args[0] is True and run.args == (False, 'echo "$GREETING" > greeting.txt')
    assert dict(run.env)["GREETING"] == "hi" and run.workdir == "/srv/app"    # RUN: environment, not text
    assert exec_run.args == (False, ("sh", "-c", "echo exec form"))
    assert user.args == ("web",) and cmd.user == "web"
    assert label.args == (("org.example.role", "web"), ("version", "1"))
    assert expose.args == ((8080, "tcp"), (53, "udp"))
    assert cmd.args == (("httpd", "-f", "-p", "8080"),)


@pytest.mark.parametrize("text,message", [
    ("RUN true", ":1: RUN before FROM"),
    ("FROM a\nFROM b", ":2: one FROM only"),
    ("FROM a AS build", ":1: FROM takes one image reference (no AS"),
    ("FROM a\nFETCH x", ":2: unknown instruction 'FETCH'"),
    ("FROM a\nCOPY ../secret /x", "outside the build context"),
    ("FROM a\nCOPY /etc/passwd /x", "outside the build context"),
    ("FROM a\nCOPY onlyone", "at least one source"),
    ("FROM a\nCOPY --chown=ro'ot x /y", "--chown takes USER"),
    ("FROM a\nRUN --privileged x", "unknown RUN option"),
    ("FROM a\nRUN [\"sh\", 1]", "JSON array of strings"),
    ("FROM a\nRUN", "a command is missing"),
    ("FROM a\nEXPOSE 70000", "EXPOSE takes PORT"),
    ("FROM a\nEXPOSE 80/sctp", "EXPOSE takes PORT"),
    ("FROM a\nENV novalue", "KEY=VALUE"),
    ("FROM a\nWORKDIR $NOPE", "$NOPE is not set"),
    ("FROM a\nUSER Root;rm", "USER takes a user name"),
    ("# nothing", "no FROM instruction"),
    ("FROM a\nCHECKPOINT\nRUN true", ":3: CHECKPOINT must be the last instruction"),
    ("FROM a\nCHECKPOINT now", ":2: CHECKPOINT takes no arguments"),
])
def test_errors_name_the_line(text, message):
    with pytest.raises(VmfileError) as err:
        parse(text, path="app/Vmfile")
    assert message in err.value.message and err.value.message.startswith("app/Vmfile")
    assert "\n" not in err.value.message


def test_an_unknown_build_arg_is_refused():
    with pytest.raises(VmfileError, match="--build-arg NOPE is declared by no ARG"):
        parse("FROM a\nRUN true", build_args={"NOPE": "1"})


def test_defaults_and_continuations():
    vf = parse("FROM x\nARG V\nENV A=${V:-fallback} B=$V\nRUN echo one \\\n  # a comment inside\n  two\n")
    env, run = vf.steps
    assert dict(env.args) == {"A": "fallback", "B": ""}
    assert run.args == (False, "echo one two") and run.line == 4


@given(st.text(max_size=300))
def test_any_text_parses_or_fails_with_one_line(text):
    try:
        parse("FROM base\n" + text)
    except VmfileError as exc:
        assert "\n" not in exc.message and exc.message.startswith("Vmfile")


def test_checkpoint_is_the_last_step():
    vmfile = parse("FROM tiny\nRUN echo warm >/etc/motd\nCHECKPOINT\n")
    assert [s.keyword for s in vmfile.steps] == ["RUN", "CHECKPOINT"]
