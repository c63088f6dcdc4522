"""vmctl's client key (modes, one key under concurrency), host key helpers, cp argument parsing."""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import os
import stat
import subprocess
import shutil

import pytest

from vmctl.errors import UsageError
from vmctl.guest.cp import parse_cp_arg, parse_cp_args
from vmctl.guest.keys import ensure_client_key, fingerprint, host_key_from_line, new_ed25519_keypair, parse_public_line
from vmctl.guest.openssh import known_hosts_line


def _make(path: str) -> str:
    from pathlib import Path

    return ensure_client_key(Path(path)).public_line


def test_client_key_modes_and_format(tmp_path):
    keys = tmp_path / "store" / "keys"
    key = ensure_client_key(keys)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert key.path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    kind, b64, comment = key.public_line.split(" ")
    assert (kind, comment) == ("ssh-ed25519", "vmctl")
    assert b64.startswith("AAAA")
    assert (keys / "id_ed25519.pub").read_text().strip() == key.public_line
    assert key.pkey().get_base64() == b64
    # idempotent, and modes are mended
    os.chmod(key.path, 0o644)
    os.chmod(keys, 0o755)
    again = ensure_client_key(keys)
    assert again.public_line == key.public_line
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert sorted(p.name for p in keys.iterdir()) == ["id_ed25519", "id_ed25519.pub"]


def test_client_key_created_once_by_concurrent_processes(tmp_path):
    keys = str(tmp_path / "keys")
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        lines = pool.map(_make, [keys] * 16)
    assert len(set(lines)) == 1
    assert sorted(os.listdir(keys)) == ["id_ed25519", "id_ed25519.pub"]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_fingerprint_matches_ssh_keygen(tmp_path):
    _, line = new_ed25519_keypair("x@y")
    (tmp_path / "k.pub").write_text(line + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], capture_output=True, text=True,
                         check=True).stdout
    assert out.split()[1] == fingerprint(line)


def test_host_key_helpers():
    _, line = new_ed25519_keypair("")
    kind, blob, comment = parse_public_line(line)
    assert kind == "ssh-ed25519" and comment == ""
    assert fingerprint(blob) == "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert host_key_from_line(line).asbytes() == blob
    assert known_hosts_line("127.0.0.1", 2222, line).startswith("[127.0.0.1]:2222 ssh-ed25519 ")
    assert known_hosts_line("10.0.0.5", 22, line).startswith("10.0.0.5 ssh-ed25519 ")
    with pytest.raises(UsageError):
        parse_public_line("ssh-rsa " + line.split()[1])  # type says rsa, data says ed25519
    with pytest.raises(UsageError):
        parse_public_line("ssh-ed25519 not*base64")
    with pytest.raises(UsageError):
        parse_public_line("garbage")


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("web:/etc/hosts", ("web", "/etc/hosts")),
        ("web-1.x:rel/path", ("web-1.x", "rel/path")),
        ("web:", ("web", ".")),
        ("web:a:b", ("web", "a:b")),
        ("/abs/a:b", (None, "/abs/a:b")),
        ("./a:b", (None, "./a:b")),
        ("../a:b", (None, "../a:b")),
        ("dir/a:b", (None, "dir/a:b")),
        ("plain.txt", (None, "plain.txt")),
        (".", (None, ".")),
    ],
)
def test_parse_cp_arg(arg, expected):
    assert parse_cp_arg(arg) == expected


@pytest.mark.parametrize("arg", [":path", "bad name:x", "-vm:x", "a..b:x", ""])
def test_parse_cp_arg_rejects(arg):
    with pytest.raises(UsageError):
        parse_cp_arg(arg)


def test_parse_cp_args_needs_exactly_one_remote_side():
    plan = parse_cp_args("./local:file", "vm:/tmp/")
    assert (plan.name, plan.remote, plan.local, plan.upload) == ("vm", "/tmp/", "./local:file", True)
    plan = parse_cp_args("vm:/var/log", "logs")
    assert (plan.name, plan.remote, plan.local, plan.upload) == ("vm", "/var/log", "logs", False)
    with pytest.raises(UsageError):
        parse_cp_args("a:/x", "b:/y")
    with pytest.raises(UsageError):
        parse_cp_args("x", "./y")
