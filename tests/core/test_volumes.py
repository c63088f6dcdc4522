"""Volumes: -v/--mount parsing, the checks against the host, the transport choice, the seed's
mount commands. Pure or on tmp_path; the guest side is in tests/e2e/test_volumes_e2e.py."""

import os
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from vmctl.core.volumes import (VolumeMount, VolumeSpec, boot_commands, check_target, parse_mount,
                                parse_volume, plan_mounts, resolve_specs)
from vmctl.errors import UsageError
from vmctl.seed.writer import seed_files


def test_short_and_long_forms():
    assert parse_volume("/src:/work") == VolumeSpec("/src", "/work", False)
    assert parse_volume("/src:/work:ro") == VolumeSpec("/src", "/work", True)
    assert parse_volume("/src:/work:rw") == VolumeSpec("/src", "/work", False)
    assert parse_mount("type=bind,source=/a,target=/b,readonly") == VolumeSpec("/a", "/b", True)
    assert parse_mount("src=/a,dst=/b,ro=false") == VolumeSpec("/a", "/b", False)
    assert parse_mount("source=/a,destination=/b") == VolumeSpec("/a", "/b", False)


@pytest.mark.parametrize("text", ["/a", "/a:/b:rx", "/a:/b:ro:x", ""])
def test_bad_short_forms(text):
    with pytest.raises(UsageError, match="HOST_DIR:GUEST_DIR"):
        parse_volume(text)


@pytest.mark.parametrize("text,msg", [
    ("type=volume,source=a,target=/b", "only bind"),
    ("type=bind,target=/b", "needs source"),
    ("type=bind,source=/a", "needs source"),
    ("source=/a,target=/b,readonly=maybe", "true or false"),
    ("source=/a,target=/b,bogus=1", "invalid --mount field"),
    ("source=/a,source=/c,target=/b", "twice"),
])
def test_bad_long_forms(text, msg):
    with pytest.raises(UsageError, match=msg):
        parse_mount(text)


@pytest.mark.parametrize("target,msg", [
    ("relative", "absolute"), ("/", "over the guest's /"), ("//", "over the guest's /"),
    ("/a/../b", "normalized"), ("/a/", "normalized"), ("/a b", "invalid"), ("/a'b", "invalid"),
    ("/a;reboot", "invalid"), ("/a\nb", "invalid"), ("/a,ro", "invalid"), ("/a:b", "invalid"),
])
def test_bad_targets(target, msg):
    with pytest.raises(UsageError, match=msg):
        check_target(target)


@given(st.text(max_size=40))
def test_any_accepted_target_is_one_plain_absolute_word(text):
    try:
        target = check_target(text)
    except UsageError:
        return
    assert target.startswith("/") and target != "/"
    assert os.path.normpath(target) == target
    assert ".." not in target.split("/")
    assert all(c.isascii() and (c.isalnum() or c in "._@+/-") for c in target)


def test_host_checks(tmp_path):
    root = tmp_path / "vmctl-root"
    (root / "keys").mkdir(parents=True)
    src = tmp_path / "src"
    src.mkdir()
    link = tmp_path / "link"
    link.symlink_to(src)
    (tmp_path / "file").write_text("x")
    # sources are resolved: the guest gets the directory the link named at create, never a later one
    assert resolve_specs((VolumeSpec(str(link), "/w"),), root) == (VolumeSpec(str(src), "/w"),)
    bad = [
        (VolumeSpec("src", "/w"), "absolute host path"),
        (VolumeSpec(str(tmp_path / "missing"), "/w"), "does not exist"),
        (VolumeSpec(str(tmp_path / "file"), "/w"), "not a directory"),
        (VolumeSpec(str(root), "/w"), "vmctl's own data"),
        (VolumeSpec(str(root / "keys"), "/w"), "vmctl's own data"),
        (VolumeSpec(str(src), "w"), "absolute guest path"),
    ]
    for spec, msg in bad:
        with pytest.raises(UsageError, match=msg):
            resolve_specs((spec,), root)
    with pytest.raises(UsageError, match="two volumes are mounted on /w"):
        resolve_specs((VolumeSpec(str(src), "/w"), VolumeSpec(str(tmp_path), "/w", True)), root)
    with pytest.raises(UsageError, match="at most"):
        resolve_specs(tuple(VolumeSpec(str(src), f"/w{n}") for n in range(17)), root)


def test_read_only_volumes_are_virtiofs_over_a_read_only_bind_or_9p():
    specs = (VolumeSpec("/a", "/ro", True), VolumeSpec("/b", "/rw", False))
    binds = Path("/var/lib/vmctl/instances/x/volumes")
    got = plan_mounts(specs, virtiofs=True, binds=binds)
    assert [(m.transport, m.tag, m.bind) for m in got] == [("virtiofs", "vmctl0", f"{binds}/vmctl0"),
                                                          ("virtiofs", "vmctl1", None)]
    assert got[0].shared_path == f"{binds}/vmctl0" and got[1].shared_path == "/b"
    # no right to mount: read-only by QEMU's 9p export
    assert [(m.transport, m.bind) for m in plan_mounts(specs, virtiofs=True)] == [("9p", None), ("virtiofs", None)]
    assert [m.transport for m in plan_mounts(specs, virtiofs=False, binds=binds)] == ["9p", "9p"]


def test_mount_points_are_read_unescaped():
    from vmctl.hostmount import mount_points
    info = ("83 27 254:0 /src /var/lib/vmctl/instances/a\\040b/volumes/vmctl0 ro,relatime - ext4 /dev/vda rw\n"
            "22 1 0:21 / /proc rw - proc proc rw\n")
    assert mount_points(info) == ["/var/lib/vmctl/instances/a b/volumes/vmctl0", "/proc"]


def test_seed_mounts_every_volume_at_every_boot_as_argv_words():
    mounts = (VolumeMount("/a", "/ro", True, "9p", "vmctl0"), VolumeMount("/b", "/rw", False, "virtiofs", "vmctl1"))
    cmds = boot_commands(mounts)
    assert cmds[0] == ["mkdir", "-p", "/ro"]
    assert cmds[1][:3] == ["mount", "-t", "9p"] and cmds[1][4].endswith(",ro") and cmds[1][-2:] == ["vmctl0", "/ro"]
    assert cmds[3] == ["mount", "-t", "virtiofs", "vmctl1", "/rw"]
    user_data = seed_files(instance_id="i", hostname="h", authorized_keys=[], bootcmd=cmds,
                           user_data="#cloud-config\nbootcmd:\n  - echo mine\n")["user-data"]
    import yaml
    data = yaml.safe_load(user_data)
    assert data["bootcmd"][0] == "echo mine" and data["bootcmd"][1:] == cmds   # the user's first


def test_records_of_volumes_are_checked_when_read():
    m = VolumeMount("/a", "/ro", True, "9p", "vmctl0")
    assert VolumeMount.from_json(m.to_json()) == m
    for bad in ({**m.to_json(), "target": "/"}, {**m.to_json(), "transport": "nfs"}, {**m.to_json(), "tag": "x"},
                {**m.to_json(), "bind": "relative"}, {**m.to_json(), "readonly": False, "bind": "/x"}):
        with pytest.raises((UsageError, ValueError)):
            VolumeMount.from_json(bad)
