"""The NoCloud seed writer: ISO layout, merging, MIME multipart, injection resistance, and every
cloud-config it writes accepted by the real ``cloud-init schema``."""

from __future__ import annotations

import email
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from vmctl.errors import UsageError
from vmctl.seed import HostKey, generate_host_key, read_iso, seed_files, write_seed

CLOUD_INIT = shutil.which("cloud-init")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFpN9aP2QjlNOzsmzkWhO086kNd6fbFtlUjTV1FqVnHU me@host"


def cloud_config_parts(user_data: str) -> list[str]:
    """The cloud-config documents inside user-data (the whole text, or multipart parts)."""
    if user_data.startswith("#cloud-config"):
        return [user_data]
    msg = email.message_from_string(user_data)
    assert msg.is_multipart()
    return [p.get_payload(decode=True).decode() for p in msg.get_payload()
            if p.get_content_type() == "text/cloud-config"]


def validate(user_data: str, tmp_path: Path) -> None:
    """Every cloud-config part passes ``cloud-init schema --config-file``."""
    if CLOUD_INIT is None:
        pytest.skip("cloud-init not installed")
    parts = cloud_config_parts(user_data)
    assert parts
    for i, text in enumerate(parts):
        f = tmp_path / f"part{i}.yaml"
        f.write_text(text)
        res = subprocess.run([CLOUD_INIT, "schema", "--config-file", str(f)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


def write_and_read(tmp_path: Path, **kw) -> dict[str, str]:
    path = tmp_path / "seed.iso"
    write_seed(path, **kw)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    label, files = read_iso(path)
    assert label == "cidata"
    assert set(files) == {"meta-data", "user-data"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    return {k: v.decode() for k, v in files.items()}


def test_basic_seed(tmp_path):
    hk = generate_host_key()
    files = write_and_read(tmp_path, instance_id="iid-1", hostname="web-1", authorized_keys=[KEY],
                           host_keys=[hk], extra_runcmd=["echo hi > /tmp/x", ["touch", "/a b"]])
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": "iid-1", "local-hostname": "web-1"}
    ud = files["user-data"]
    assert ud.startswith("#cloud-config\n")
    cfg = yaml.safe_load(ud)
    assert cfg["hostname"] == "web-1" and cfg["ssh_authorized_keys"] == [KEY]
    assert cfg["ssh_keys"] == {"ed25519_private": hk.private_openssh, "ed25519_public": " ".join(hk.public.split()[:2])}
    assert cfg["runcmd"] == ["echo hi > /tmp/x", ["touch", "/a b"]]
    assert "ed25519_private: |" in ud  # literal block, as cloud-init users write it
    validate(ud, tmp_path)


def test_user_cloud_config_is_merged(tmp_path):
    user = "#cloud-config\nruncmd:\n  - echo user\nssh_authorized_keys:\n  - ssh-rsa AAAAB3Nza user\npackages: [htop]\n"
    files = write_and_read(tmp_path, instance_id="i", hostname="h", authorized_keys=[KEY],
                           user_data=user, extra_runcmd=["echo vmctl"])
    cfg = yaml.safe_load(files["user-data"])
    assert cfg["runcmd"] == ["echo user", "echo vmctl"]
    assert cfg["ssh_authorized_keys"] == ["ssh-rsa AAAAB3Nza user", KEY]
    assert cfg["packages"] == ["htop"] and cfg["hostname"] == "h"
    validate(files["user-data"], tmp_path)


def test_user_hostname_wins_and_host_keys_stay_pinned(tmp_path):
    hk = generate_host_key()
    user = "#cloud-config\nhostname: chosen\nssh_keys:\n  ed25519_private: nope\n  rsa_private: keep\n"
    cfg = yaml.safe_load(seed_files(instance_id="i", hostname="h", authorized_keys=[], host_keys=[hk],
                                    user_data=user)["user-data"])
    assert cfg["hostname"] == "chosen"
    assert cfg["ssh_keys"]["ed25519_private"] == hk.private_openssh and cfg["ssh_keys"]["rsa_private"] == "keep"


def test_user_script_becomes_multipart(tmp_path):
    script = "#!/bin/sh\necho 'hello' > /root/x\n"
    files = write_and_read(tmp_path, instance_id="i", hostname="h", authorized_keys=[KEY],
                           host_keys=[generate_host_key()], user_data=script)
    msg = email.message_from_string(files["user-data"])
    assert msg.get_content_type() == "multipart/mixed"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert parts[1].get_payload(decode=True).decode() == script
    validate(files["user-data"], tmp_path)


def test_user_multipart_gets_our_part_appended(tmp_path):
    from vmctl.seed.cloudconfig import multipart
    user = multipart([("#!/bin/sh\ntrue\n", "text/x-shellscript", "a.sh")])
    ud = seed_files(instance_id="i", hostname="h", authorized_keys=[KEY], user_data=user)["user-data"]
    types = [p.get_content_type() for p in email.message_from_string(ud).get_payload()]
    assert types == ["text/x-shellscript", "text/cloud-config"]
    validate(ud, tmp_path)


def test_non_ascii_script_is_base64_part(tmp_path):
    script = "#!/bin/sh\necho 'héllo'\n"
    ud = seed_files(instance_id="i", hostname="h", authorized_keys=[], user_data=script)["user-data"]
    part = email.message_from_string(ud).get_payload()[1]
    assert part["Content-Transfer-Encoding"] == "base64"
    assert part.get_payload(decode=True).decode() == script


@pytest.mark.parametrize("hostname", ["bad\nname", "a b", "x: y", "-lead", "", "a" * 64, "h\n- evil: 1", "ok'\"", "é"])
def test_bad_hostnames_are_refused(hostname, tmp_path):
    with pytest.raises(UsageError):
        write_seed(tmp_path / "s.iso", instance_id="i", hostname=hostname, authorized_keys=[])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("key", [KEY + "\nruncmd: [reboot]", "ssh-ed25519 AAAA\n- injected", "not a key", KEY + "\rx"])
def test_bad_authorized_keys_are_refused(key):
    with pytest.raises(UsageError):
        seed_files(instance_id="i", hostname="h", authorized_keys=[key])


@pytest.mark.parametrize("iid", ["a\nb", "x: y", "../x", ""])
def test_bad_instance_ids_are_refused(iid):
    with pytest.raises(UsageError):
        seed_files(instance_id=iid, hostname="h", authorized_keys=[])


def test_yaml_injection_in_values_stays_data(tmp_path):
    # Key comments and runcmd strings may hold any YAML-looking text: it must stay one value.
    evil_key = KEY.rsplit(" ", 1)[0] + " me: {runcmd: [reboot]} # &a *a !!python/object"
    evil_cmd = "echo '\n- reboot\nhostname: pwned'"
    ud = seed_files(instance_id="i", hostname="h", authorized_keys=[evil_key], extra_runcmd=[evil_cmd, ["a", "--- !x"]])["user-data"]
    cfg = yaml.safe_load(ud)
    assert cfg == {"hostname": "h", "manage_etc_hosts": True, "ssh_authorized_keys": [evil_key],
                   "disable_root": False, "runcmd": [evil_cmd, ["a", "--- !x"]]}
    validate(ud, tmp_path)


def test_bad_user_data_is_refused():
    for bad in ["#cloud-config\n- a list\n", "#cloud-config\nkey: [unclosed\n", "plain text"]:
        with pytest.raises(UsageError):
            seed_files(instance_id="i", hostname="h", authorized_keys=[], user_data=bad)


def test_host_key_shape():
    hk = generate_host_key()
    assert hk.key_type == "ssh-ed25519" and hk.cloud_init_name == "ed25519"
    assert hk.fingerprint.startswith("SHA256:") and "=" not in hk.fingerprint
    if shutil.which("ssh-keygen"):
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".pub") as f:
            f.write(hk.public + "\n"); f.flush()
            out = subprocess.run(["ssh-keygen", "-lf", f.name], capture_output=True, text=True, check=True).stdout
        assert out.split()[1] == hk.fingerprint
    with pytest.raises(ValueError):
        HostKey(private_openssh="x", public=hk.public)


def test_rewrite_is_atomic_replace(tmp_path):
    path = tmp_path / "seed.iso"
    write_seed(path, instance_id="i1", hostname="a", authorized_keys=[])
    ino = path.stat().st_ino
    write_seed(path, instance_id="i2", hostname="b", authorized_keys=[])
    assert path.stat().st_ino != ino
    assert b"i2" in read_iso(path)[1]["meta-data"]
