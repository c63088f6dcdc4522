"""The CLI frame: version, info with the KVM probe's verdict, errors as one line with exit codes."""

import json
import os

import pytest

from vmctl import errors


def test_version_json(cli_run):
    result = cli_run("version", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["vmctl"] and data["libvirt_python"].startswith(("9.", "10.", "11."))


def test_exit_codes_are_distinct():
    codes = [cls.exit_code for cls in errors.ALL_ERRORS]
    assert len(codes) == len(set(codes))
    assert errors.UsageError.exit_code == 2  # click's own usage errors use 2 as well


def test_info_reports_verified_kvm_verdict(cli_run, libvirtd):
    result = cli_run("--connect", "qemu:///system", "info", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["kvm"]) >= {"usable", "verified", "reason", "accelerator"}
    assert data["kvm"]["accelerator"] == ("kvm" if data["kvm"]["usable"] else "tcg")
    assert data["libvirt"]["libvirt_daemon"].count(".") == 2
    assert data["store"]["root"] == os.environ["VMCTL_ROOT"]


def test_info_with_unreachable_libvirt_has_its_own_exit_code(cli_run):
    result = cli_run("--connect", "qemu+unix:///system?socket=/nonexistent/sock", "info", "--json")
    assert result.exit_code == errors.LibvirtUnreachable.exit_code
    assert json.loads(result.stdout)["libvirt"]["error"]
    assert result.stderr.startswith("vmctl: error: cannot connect")


def test_unknown_mode_is_a_usage_error(cli_run):
    result = cli_run("--mode", "cloud", "info")
    assert result.exit_code == 2


def test_kvm_probe_with_a_bogus_kernel_says_not_usable(tmp_path, monkeypatch):
    from vmctl.backend.kvm_probe import probe_kvm

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VMCTL_ACCEL", raising=False)
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"not a kernel")
    verdict = probe_kvm(kernel=bogus, timeout=5)
    assert verdict.usable is False and verdict.reason
    again = probe_kvm(kernel=bogus, timeout=5)
    assert again.cached and again.usable is False


def test_print_xml_from_a_disk_file_is_schema_valid_and_touches_nothing(cli_run, vmctl_root, tmp_path, libvirtd):
    import subprocess

    from lxml import etree

    disk = tmp_path / "some.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    result = cli_run("create", "web1", "--image", str(disk), "--cpus", "2", "--memory", "1G",
                     "--port", "8080:80", "--print-xml")
    assert result.exit_code == 0, result.output
    doc = etree.fromstring(result.stdout.encode())
    schema = etree.RelaxNG(file="/usr/share/libvirt/schemas/domain.rng")
    assert schema.validate(doc), schema.error_log
    assert doc.findtext("name") == "web1" and doc.findtext("vcpu") == "2"
    assert doc.find("memory").text == str(1024 * 1024) and doc.find("memory").get("unit") == "KiB"
    assert "hostfwd=tcp:127.0.0.1:8080-:80" in result.stdout
    assert not vmctl_root.exists()  # nothing was written


@pytest.mark.parametrize("args, says", [
    (["--cpus", "0"], "invalid CPU count 0"),
    (["--cpus", "256"], "invalid CPU count 256"),
    (["--memory", "0"], "invalid memory"),
    (["--memory", "32M"], "at least 64 MiB"),
    (["--network", "n1", "--bridge", "br0"], "exclude each other"),
    (["--network", "../n"], "invalid network name"),
])
def test_what_the_user_asks_is_checked_not_replaced_by_a_default(cli_run, vmctl_root, tmp_path, libvirtd, args, says):
    import subprocess

    disk = tmp_path / "some.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    result = cli_run("create", "web1", "--image", str(disk), *args, "--print-xml")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("vmctl: error: ") and says in result.stderr, result.stderr
    assert not vmctl_root.exists()


def test_create_from_a_disk_file_without_print_xml_asks_for_an_import(cli_run, tmp_path, libvirtd):
    disk = tmp_path / "some.qcow2"
    disk.write_bytes(b"QFI\xfb" + b"\0" * 508)
    result = cli_run("create", "web1", "--image", str(disk))
    assert result.exit_code == 2 and "vmctl image import" in result.stderr


def test_the_lazy_command_table_is_what_the_commands_say():
    import click

    from vmctl.cli.main import COMMANDS, cli

    ctx = click.Context(cli)
    for name, (module, text) in COMMANDS.items():
        cmd = cli.get_command(ctx, name)
        assert cmd is not None, name
        first = (cmd.help or "").strip().split("\n")[0].strip()
        assert first == text, name
        owner = next(iter(cmd.commands.values())).callback if isinstance(cmd, click.Group) else cmd.callback
        assert owner.__module__ == f"vmctl.cli.{module}", name
    assert set(cli.commands) == set(COMMANDS)


def test_help_imports_no_command_module():
    import subprocess
    import sys

    code = ("import sys\nfrom click.testing import CliRunner\nfrom vmctl.cli.main import cli\n"
            "r = CliRunner().invoke(cli, ['--help'])\nassert r.exit_code == 0 and 'snapshot' in r.output\n"
            "print(sorted(m for m in sys.modules if m.startswith(('vmctl.cli.', 'vmctl.core.', 'libvirt', 'paramiko'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == ["vmctl.cli.main"], out


def test_the_help_knows_the_modes_the_settings_know():
    from vmctl import config
    from vmctl.cli import main

    assert main.MODES == config.MODES
