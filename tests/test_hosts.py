"""The host table (vmctl/hosts.py) and the CLI's choice of host: every field checked where it
enters (`host add` arguments, a hosts.json edited by hand or by someone else), one-line errors with
distinct exit codes, nothing written when anything is wrong."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from vmctl.errors import NotFoundError, UsageError
from vmctl.hosts import HostTable, make_host

EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def test_a_host_is_checked_field_by_field():
    h = make_host("rack1", "qemu+ssh://admin@10.0.0.5/system", root="/srv/vmctl/", memory_mib=4096)
    assert (h.root, h.address, h.mode, h.accelerator, h.memory_mib) == ("/srv/vmctl", "10.0.0.5", "hosted", "auto", 4096)
    assert make_host("local-tls", "qemu+tls://192.0.2.7/system", address="198.51.100.1").address == "198.51.100.1"
    assert make_host("here", "qemu:///system").address == "127.0.0.1"
    bad = [
        dict(name="local", uri="qemu:///system"),                       # reserved: this machine
        dict(name="auto", uri="qemu:///system"),                        # reserved: placement
        dict(name="a b", uri="qemu:///system"),
        dict(name="h", uri="http://example/system"),
        dict(name="h", uri="qemu+tcp://h/other"),
        dict(name="h", uri="qemu+tcp://h/system --x"),
        dict(name="h", uri="qemu+tcp://h/system\n"),
        dict(name="h", uri="qemu:///system", root="relative/dir"),
        dict(name="h", uri="qemu:///system", root="/a/../etc"),
        dict(name="h", uri="qemu:///system", root="/"),
        dict(name="h", uri="qemu:///system", address="::1"),
        dict(name="h", uri="qemu:///system", address="0.0.0.0"),
        dict(name="h", uri="qemu:///system", mode="bridge"),
        dict(name="h", uri="qemu:///system", accelerator="hvf"),
        dict(name="h", uri="qemu:///system", memory_mib=1),
        dict(name="h", uri="qemu:///system", memory_mib=True),
    ]
    for kw in bad:
        with pytest.raises(UsageError) as err:
            make_host(**kw)
        assert "\n" not in err.value.message


@EXAMPLES
@given(name=st.text(max_size=80), uri=st.text(max_size=120), root=st.text(max_size=80))
def test_any_text_is_a_host_or_a_usage_error(name, uri, root):
    try:
        h = make_host(name, uri, root=root or None, address="10.1.2.3")
    except UsageError as exc:
        assert "\n" not in exc.message
        return
    assert h.root.startswith("/") and ".." not in h.root.split("/") and not any(ord(c) < 32 for c in h.root)
    assert not any(ord(c) < 33 for c in h.uri) and h.uri.split(":", 1)[0].startswith("qemu")


def test_the_way_to_a_hosts_guests():
    # a qemu+ssh host's guests are reached through its own SSH server by default (as ssh -J)
    assert make_host("r", "qemu+ssh://admin@10.0.0.5/system").jump == "admin@10.0.0.5"
    assert make_host("r", "qemu+ssh://10.0.0.5:2222/system").jump == "10.0.0.5:2222"   # ssh's user: the local one
    assert make_host("r", "qemu+ssh://Admin.X@10.0.0.5/system").jump == "Admin.X@10.0.0.5"
    assert make_host("r", "qemu+ssh://a%20b@10.0.0.5/system").jump is None   # not a name ssh gets from vmctl
    assert make_host("r", "qemu+ssh://admin@10.0.0.5/system", jump="none").jump is None
    assert make_host("r", "qemu+tcp://10.0.0.5/system").jump is None
    assert make_host("r", "qemu+tcp://10.0.0.5/system", jump="ops@bastion.example:22").jump == "ops@bastion.example:22"
    assert make_host("r", "qemu+tcp://10.0.0.5/system", jump="10.0.0.9").jump == "10.0.0.9"
    for bad in ("-oProxyCommand=x@h", "-h", "root@-h", "root@h:0", "root@h:99999", "root@h;id",
                "root@h -p 1", "r oot@h", "root@", "@h", "root@h:2x", "root@h\n", "a@b@h"):
        with pytest.raises(UsageError) as err:
            make_host("r", "qemu+tcp://10.0.0.5/system", jump=bad)
        assert "invalid --jump" in err.value.message and "\n" not in err.value.message


@EXAMPLES
@given(st.text(max_size=60))
def test_any_jump_text_is_checked_or_refused(text):
    try:
        h = make_host("r", "qemu+tcp://10.0.0.5/system", jump=text)
    except UsageError as exc:
        assert "\n" not in exc.message
        return
    if h.jump is not None:   # nothing ssh could take for an option, nothing a shell could split
        assert not h.jump.startswith("-") and "@-" not in h.jump
        assert all(c.isascii() and (c.isalnum() or c in "@._-:") for c in h.jump)


def test_the_table_round_trips_privately(tmp_path):
    path = tmp_path / "cfg" / "hosts.json"
    t = HostTable.read(path)
    assert t.hosts == {} and t.default is None
    t.hosts["h1"] = make_host("h1", "qemu+tcp://10.9.0.2/system", root="/mnt/vmctl", accelerator="tcg")
    t.hosts["h2"] = make_host("h2", "qemu+ssh://ops@10.9.0.3/system", jump="none")
    t.hosts["h3"] = make_host("h3", "qemu+ssh://ops@10.9.0.4/system")
    t.default = "h1"
    t.write()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = HostTable.read(path)
    assert again.hosts == t.hosts and again.default == "h1"
    with pytest.raises(NotFoundError, match="no such host: h9"):
        again.get("h9")


@pytest.mark.parametrize("content, needle", [
    (b"{not json", "is not JSON"),
    (b"[]", "expected"),
    (b'{"hosts": []}', "expected"),
    (b'{"hosts": {"h1": "qemu:///system"}}', "must be an object"),
    (b'{"hosts": {"h1": {"uri": 5}}}', "invalid libvirt URI"),
    (b'{"hosts": {"../x": {"uri": "qemu:///system"}}}', "invalid"),
    (b'{"hosts": {"h1": {"uri": "qemu:///system", "root": "/x/../../etc"}}}', "data root"),
    (b'{"hosts": {"h1": {"uri": "qemu:///system", "memory_mib": "lots"}}}', "--memory"),
    (b'{"default": "h2", "hosts": {"h1": {"uri": "qemu:///system"}}}', "default host"),
    (b" " * ((1 << 20) + 1), "larger than"),
])
def test_a_hostile_table_is_one_line(tmp_path, content, needle):
    path = tmp_path / "hosts.json"
    path.write_bytes(content)
    with pytest.raises(UsageError) as err:
        HostTable.read(path)
    assert needle in err.value.message and "\n" not in err.value.message


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    hosts = tmp_path / "hosts.json"
    monkeypatch.setenv("VMCTL_HOSTS", str(hosts))
    monkeypatch.setenv("VMCTL_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("VMCTL_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("VMCTL_HOST", raising=False)
    monkeypatch.delenv("VMCTL_CONNECT", raising=False)
    (tmp_path / "none.toml").write_text("")
    hosts.write_text(json.dumps({"default": None, "hosts": {"h1": {
        "uri": "qemu+tcp://127.0.0.3/system", "root": "/mnt/vmctl", "address": "127.0.0.3"}}}))
    return hosts


def _cli(*args):
    from vmctl.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("args, code, needle", [
    (["--host", "nosuch", "ls"], 3, "no such host: nosuch (hosts: h1)"),
    (["--host", "auto", "ls"], 2, "--host auto picks a host for a new VM"),
    (["--host", "h1", "--connect", "test:///default", "ls"], 2, "--connect and --host exclude each other"),
    (["--connect", "test:///default", "migrate", "vm", "--to", "h1"], 2, "name it with --host"),
    (["host", "rm", "nosuch"], 3, "no such host"),
    (["host", "use", "nosuch"], 3, "no such host"),
    (["host", "add", "h2", "ftp://x/system"], 2, "invalid libvirt URI"),
    (["host", "add", "h1", "qemu+tcp://127.0.0.3/system"], 2, "exists already"),
    (["host", "add", "h2", "qemu+tcp://127.0.0.3/system", "--memory", "lots"], 2, "memory"),
])
def test_the_cli_refuses_in_one_line(cli_env, args, code, needle):
    before = cli_env.read_bytes()
    result = _cli(*args)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("vmctl: error: ") and needle in result.stderr
    assert result.stderr.count("\n") == 1
    assert cli_env.read_bytes() == before   # nothing half-written


def test_use_sets_and_clears_the_default(cli_env):
    assert _cli("host", "use", "h1").exit_code == 0
    assert json.loads(cli_env.read_text())["default"] == "h1"
    # the local store is still reachable by name, and image commands stay local
    assert _cli("--host", "local", "--connect", "test:///default", "ls", "-q").exit_code == 0
    assert _cli("images", "-q").exit_code == 0
    assert _cli("host", "use", "local").exit_code == 0
    assert json.loads(cli_env.read_text())["default"] is None
