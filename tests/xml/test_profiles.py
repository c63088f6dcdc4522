"""Machine profiles: built-ins load, user directory first, validation errors are clear."""

from __future__ import annotations

import pytest

from vmctl.errors import NotFoundError, UsageError
from vmctl.profiles import (
    list_profiles, load_profile, parse_profile, profile_dirs, profile_to_dict,
)
from golden_cases import DATA


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    d = tmp_path / "vmctl" / "profiles"
    d.mkdir(parents=True)
    return d


def test_builtin_profiles_load(user_dir):
    assert {"hosted", "kvm", "minimal", "dense"} <= set(list_profiles())
    hosted = load_profile("hosted")
    assert hosted.libvirt.uri == "qemu:///session" and hosted.network.kind == "user"
    assert hosted.virt_type == "kvm" and hosted.machine.tcg_cpu_mode == "maximum"
    kvm = load_profile("kvm")
    assert kvm.uri == "qemu:///system" and kvm.machine.cpu_mode == "host-passthrough"
    assert kvm.network_kind == "network" and kvm.network_name == "default"
    assert kvm.tuning.memory_headroom_mib == 512
    assert kvm.devices.graphics == "none"
    dense = load_profile("dense")
    assert dense.machine.tcg_tb_cache_mib == 64 and hosted.machine.tcg_tb_cache_mib is None
    assert hosted.devices.free_page_reporting and dense.devices.free_page_reporting
    minimal = load_profile("minimal")
    assert minimal.tuning.cpu_shares is None and minimal.network.kind == "user"
    assert profile_to_dict(kvm)["clock"]["timers"][2] == {"name": "hpet", "present": False}


def test_user_directory_is_searched_first(user_dir):
    (user_dir / "kvm.toml").write_text('description = "mine"\n[machine]\ncpus = 8\n')
    p = load_profile("kvm")
    assert p.description == "mine" and p.cpus == 8
    assert p.network.kind == "user"  # a full file, not extending: defaults apply
    assert profile_dirs()[0] == user_dir


def test_user_profile_can_extend_builtin_of_same_name(monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(DATA / "config-shadow"))
    p = load_profile("hosted")
    assert p.memory_mib == 768 and p.libvirt.uri == "qemu:///session"


def test_new_profile_without_code(user_dir):
    (user_dir / "big.toml").write_text('extends = "kvm"\n[machine]\ncpus = 16\nmemory_mib = 32768\n'
                                       '[network]\nkind = "bridge"\nsource = "br0"\n')
    assert "big" in list_profiles()
    p = load_profile("big")
    assert (p.cpus, p.memory_mib, p.network.kind, p.network.source) == (16, 32768, "bridge", "br0")
    assert p.machine.cpu_mode == "host-passthrough"


def test_unknown_profile_lists_available(user_dir):
    with pytest.raises(NotFoundError, match="available: .*hosted.*kvm"):
        load_profile("nope")


def test_profile_name_is_checked(user_dir):
    with pytest.raises(UsageError):
        load_profile("../etc/passwd")


@pytest.mark.parametrize("text,match", [
    ('[machine]\ncpu_mode = "fast"\n', r"\[machine\] cpu_mode must be one of"),
    ('[machine]\ncpus = "2"\n', r"cpus must be an integer"),
    ('[machine]\ncpus = true\n', r"cpus must be an integer"),
    ('[disk]\ncache = "fast"\n', r"\[disk\] cache must be one of"),
    ('[disk]\nspeed = 1\n', r"unknown key\(s\) speed"),
    ('colour = "red"\n', r"unknown key\(s\) colour"),
    ('[network]\nkind = "bridge"\n', r"source is required"),
    ('[network]\nkind = "network"\nsource = "a/b"\n', r"source must be"),
    ('[network]\nuser_pci_slot = 31\n', r"user_pci_slot must be between"),
    ('[machine]\ntcg_cpu_mode = "custom"\n', r"cpu_model is required"),
    ('[tuning]\nmemory_headroom_mib = 100\n', r"must be set together"),
    ('[tuning]\nblkio_weight = 5\n', r"blkio_weight must be between 100 and 1000"),
    ('[clock]\ntimers = [{name = "rtc", tickpolicy = "fast"}]\n', r"tickpolicy must be one of"),
    ('[clock]\ntimers = [{name = "sundial"}]\n', r"name must be one of"),
    ('[devices]\ngraphics = "spice"\n', r"graphics must be one of"),
    ('[libvirt]\nmode = "cloud"\n', r"mode must be one of"),
    ('machine = 3\n', r"\[machine\] must be a table"),
    ('description = "a\\nb"\n', r"one-line"),
    ('this is not toml', r"profile .*bad.toml"),
    ('extends = "bad"\n', r"extends itself"),
])
def test_invalid_profiles_are_refused_clearly(user_dir, text, match):
    (user_dir / "bad.toml").write_text(text)
    with pytest.raises(UsageError, match=match):
        load_profile("bad")


def test_extends_loop(user_dir):
    (user_dir / "a.toml").write_text('extends = "b"\n')
    (user_dir / "b.toml").write_text('extends = "a"\n')
    with pytest.raises(UsageError, match="loops"):
        load_profile("a")


def test_parse_profile_empty_string_means_unset():
    p = parse_profile("x", {"devices": {"rng": ""}, "disk": {"discard": ""}})
    assert p.devices.rng is None and p.disk.discard is None
