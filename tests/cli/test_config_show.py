"""`vmctl config show`: every setting's value and where it came from."""

import json
import os
import subprocess
import sys


def show(tmp_path, *args, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("VMCTL_")}
    full.update({"VMCTL_REGISTRIES_CONF": "", **env})
    out = subprocess.run([sys.executable, "-m", "vmctl", *args, "config", "show", "--json"], env=full,
                         capture_output=True, text=True, check=True).stdout
    return {r["setting"]: (r["value"], r["source"]) for r in json.loads(out)}


def test_flags_over_environment_over_config_over_defaults(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('accelerator = "tcg"\nprofile = "minimal"\nroot = "/var/tmp/from-config"\n'
                   '[registries."reg.example:5000"]\nmirrors = ["https://mirror.example"]\n')
    rows = show(tmp_path, "--root", str(tmp_path / "flag-root"), VMCTL_CONFIG=str(cfg), VMCTL_MODE="system",
                VMCTL_CONNECT="qemu:///system")
    assert rows["root"] == (str(tmp_path / "flag-root"), "--root")
    assert rows["mode"] == ("system", "VMCTL_MODE")
    assert rows["connect"] == ("qemu:///system", "VMCTL_CONNECT")
    assert rows["accelerator"] == ("tcg", f"config file ({cfg})")
    assert rows["profile"] == ("minimal", f"config file ({cfg})")
    assert rows["user_network"] == ("auto", "default")
    assert rows['registries."reg.example:5000".mirrors'][0] == ["https://mirror.example"]


def test_registries_conf_mirrors_name_their_file(tmp_path):
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "mirror.example:5000"\n')
    rows = show(tmp_path, VMCTL_CONFIG="/dev/null", VMCTL_ROOT=str(tmp_path / "r"), VMCTL_REGISTRIES_CONF=str(conf))
    value, source = rows['registries."docker.io".mirrors']
    assert value and "mirror.example:5000" in value[0] and str(conf) in source
    assert rows["root"] == (str(tmp_path / "r"), "VMCTL_ROOT")
