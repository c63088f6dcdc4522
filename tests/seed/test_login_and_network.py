"""The login-user rule and the static address, as the seed writes them: cloud-init's own schema
check accepts every cloud-config, and cloud-init's own renderer turns the network-config into the
guest's interface file."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.seed.test_seed import KEY, validate
from vmctl.core.create import DEFAULT_LOGIN, login_user
from vmctl.errors import UsageError
from vmctl.seed import seed_files
from vmctl.seed.netconfig import parse_static


def _cfg(**kw) -> dict:
    return yaml.safe_load(seed_files(instance_id="i", hostname="web", authorized_keys=[KEY], **kw)["user-data"])


def test_a_login_user_other_than_root_is_made_by_cloud_init_beside_the_default_user(tmp_path):
    files = seed_files(instance_id="i", hostname="web", authorized_keys=[KEY], login="vmctl")
    cfg = yaml.safe_load(files["user-data"])
    assert cfg["users"][0] == "default"
    entry = cfg["users"][1]
    assert entry["name"] == "vmctl" and entry["ssh_authorized_keys"] == [KEY]
    assert entry["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and entry["lock_passwd"] is True
    assert cfg["ssh_authorized_keys"] == [KEY]          # the image's default user gets them too
    assert "disable_root" not in cfg                    # root stays as the image has it
    assert cfg["manage_etc_hosts"] is True and cfg["hostname"] == "web"
    validate(files["user-data"], tmp_path)


def test_root_login_turns_disable_root_off(tmp_path):
    cfg = _cfg(login="root")
    assert cfg["disable_root"] is False and "users" not in cfg


def test_a_users_list_of_the_user_data_is_kept_first(tmp_path):
    user = "#cloud-config\nusers:\n  - name: alice\n    shell: /bin/bash\n"
    files = seed_files(instance_id="i", hostname="web", authorized_keys=[KEY], login="vmctl", user_data=user)
    cfg = yaml.safe_load(files["user-data"])
    assert [u if isinstance(u, str) else u["name"] for u in cfg["users"]] == ["alice", "default", "vmctl"]
    validate(files["user-data"], tmp_path)


@pytest.mark.parametrize("asked,config,seed,want", [
    (None, {}, True, DEFAULT_LOGIN),               # an image that names no user: vmctl's own
    (None, {"user": "debian"}, True, "debian"),    # the image's (catalog, import --user, commit)
    ("alice", {"user": "debian"}, True, "alice"),  # --user wins
    (None, {"user": "root"}, True, "root"),        # vmctl's tiny image
    (None, {}, False, "root"),                     # no seed: nothing can make a user
])
def test_who_vmctl_logs_in_as(asked, config, seed, want):
    assert login_user(asked, config, seed=seed) == want


@pytest.mark.parametrize("asked", ["Bad", "a b", "-x", "x;y", "../x", "a" * 40])
def test_login_user_names_are_checked(asked):
    with pytest.raises(UsageError):
        login_user(asked, {}, seed=True)


def test_a_user_on_an_image_without_seed_is_refused():
    with pytest.raises(UsageError, match="reads no cloud-init seed"):
        login_user("alice", {}, seed=False)


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init is in .ci/deps")
def test_network_config_is_rendered_by_cloud_init_itself(tmp_path):
    static = parse_static("52:54:00:aa:bb:cc", "192.168.50.10/24", "192.168.50.1", ("192.168.50.1",))
    files = seed_files(instance_id="i", hostname="web", authorized_keys=[KEY], network=static)
    (tmp_path / "network-config").write_text(files["network-config"])
    out = tmp_path / "out"
    subprocess.run(["cloud-init", "devel", "net-convert", "-p", str(tmp_path / "network-config"), "-k", "yaml",
                    "-d", str(out), "-D", "debian", "-O", "eni", "-m", "eth0,52:54:00:aa:bb:cc"],
                   check=True, capture_output=True, timeout=120)
    eni = (out / "etc/network/interfaces.d/50-cloud-init").read_text()
    assert "address 192.168.50.10/24" in eni and "default gw 192.168.50.1" in eni
    assert "52:54:00:aa:bb:cc" in (out / "etc/udev/rules.d/70-persistent-net.rules").read_text()


@pytest.mark.parametrize("ip,gw,why", [
    ("192.168.50.10", None, "needs a prefix"),
    ("192.168.50.0/24", None, "network's own"),
    ("300.1.1.1/24", None, "invalid --ip"),
    ("192.168.50.10/24", "10.0.0.1", "is not in"),
    ("192.168.50.10/24\nfoo: bar", None, "invalid --ip"),
])
def test_bad_static_addresses(ip, gw, why):
    with pytest.raises(UsageError, match=why):
        parse_static("52:54:00:aa:bb:cc", ip, gw)
