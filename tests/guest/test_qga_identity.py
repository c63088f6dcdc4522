"""The qemu-guest-agent path of a warm start against hostile answers (the e2e test in
tests/e2e/test_cloud_e2e.py runs it in a real cloud guest)."""

from __future__ import annotations

import base64
import shlex
import subprocess

import pytest

from vmctl.errors import GuestNotReady
from vmctl.guest import qga_identity as q
from vmctl.guest.agent import Identity
from vmctl.seed.hostkeys import generate_host_key


def _ident(**kw):
    base = dict(hostname="cw-1", instance_id="iid-1", host_key=generate_host_key(),
                authorized_keys=("ssh-ed25519 AAAA me@host",), mac="52:54:00:01:02:03", machine_id="ab" * 16,
                random=b"\x02" * 32, now=1_800_000_000.5)
    base.update(kw)
    return Identity(**base)


def test_the_script_is_valid_shell_with_every_value_quoted():
    text = q.script(_ident(hostname="a.b"), "vmctl")
    subprocess.run(["sh", "-n", "-c", text], check=True)
    assert "-----BEGIN OPENSSH PRIVATE KEY-----" in text and "52:54:00:01:02:03" in text
    # a login name is quoted, whatever it is (the record's, checked at create)
    assert shlex.quote("we ird") in q.script(_ident(), "we ird")


class Agent:
    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, command, arguments=None, timeout=10):
        self.calls.append(command)
        answer = self.answers.pop(0) if self.answers else {"exited": False}
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_clean_run():
    agent = Agent([{}, {"pid": 7}, {"exited": False}, {"exited": True, "exitcode": 0}])
    q.apply_identity(agent, "cw-1", _ident(), "vmctl")
    assert agent.calls == ["guest-set-time", "guest-exec", "guest-exec-status", "guest-exec-status"]


@pytest.mark.parametrize("answers, message", [
    ([{}, {"pid": "7"}], "did not start"),
    ([{}, {"pid": True}], "did not start"),
    ([{}, None], "did not start"),
    ([{}, {"pid": 7}, {"exited": True, "exitcode": 3, "err-data": base64.b64encode(b"\x1b[2Jboom\nagain").decode()}],
     "exit 3.*boomagain|exit 3.*boom again"),
    ([{}, {"pid": 7}, {"exited": True, "exitcode": None, "err-data": "!!notbase64"}], "exit None"),
])
def test_hostile_answers_fail_in_one_line(answers, message):
    with pytest.raises(GuestNotReady, match=message) as err:
        q.apply_identity(Agent(answers), "cw-1", _ident(), "vmctl")
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)


def test_a_script_that_never_ends_is_given_up():
    with pytest.raises(GuestNotReady, match="did not finish"):
        q.run_script(Agent([{"pid": 1}]), "cw-1", "true", timeout=0.3)


@pytest.mark.parametrize("info", [
    None, {}, {"supported_commands": "all"},
    {"supported_commands": [{"name": "guest-exec", "enabled": True}, {"name": "guest-set-time", "enabled": True}]},
    {"supported_commands": [{"name": n, "enabled": n != "guest-exec"} for n in q.NEEDED]},
])
def test_an_agent_without_what_a_clone_needs_is_refused(info):
    with pytest.raises(GuestNotReady, match="does not allow"):
        q.check_agent(Agent([info]), "cw-src")


def test_an_agent_with_everything_passes():
    q.check_agent(Agent([{"supported_commands": [{"name": n, "enabled": True} for n in q.NEEDED]}]), "cw-src")
