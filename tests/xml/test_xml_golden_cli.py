"""The golden table through the real CLI: ``vmctl create ... --print-xml`` in-process (CliRunner).

Same cases and golden files as test_xml_golden.py, which renders them with `plan_domain` directly.
Here the CLI line itself runs against a private data root with the case's image imported. What is
volatile by nature is pinned or normalised:
- uuid and SSH port: the hidden ``--uuid`` / ``--ssh-port`` options;
- accelerator and passt support: the config file's ``accelerator`` and ``user_network`` say
  what the case's host has (settings a user has too, so nothing inside vmctl is patched);
- data root, image id, kernel/initrd paths in the store, host key and creation time: replaced by
  the golden placeholders after rendering (they differ per run by design).
"""

from __future__ import annotations

import re
import shlex

import pytest

from golden_cases import (CASES, CREATED, GENID, HOST_ADDRESS, HOST_KEY, HOST_RECORD, IMAGE_ID, ROOT,
                          TEST_CONFIG_HOME, golden_path)


def _cli():
    # an ImportError here is a failure, never a skip: the CLI must import
    from vmctl.cli.main import cli
    import vmctl.core.create  # noqa: F401
    return cli


def _argv(line: str) -> list[str]:
    argv = shlex.split(line.split("   #", 1)[0])
    assert argv[0] == "vmctl" and argv[-1] == "--print-xml"
    return argv[1:]


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_print_xml_matches_golden(case, tmp_path, monkeypatch):
    from click.testing import CliRunner

    cli = _cli()
    line, _profile, inputs = CASES[case]
    root = tmp_path / "root"
    monkeypatch.setenv("VMCTL_ROOT", str(root))
    # the host the case stands for, as a user would state it in the config file: which
    # accelerator, and whether libvirt's passt backend is there (no private function is patched)
    monkeypatch.setenv("VMCTL_CONFIG", str(tmp_path / "host.toml"))
    (tmp_path / "host.toml").write_text(
        f'accelerator = "{"kvm" if inputs.virt_type == "kvm" else "tcg"}"\n'
        f'user_network = "{"passt" if inputs.passt_supported else "slirp"}"\n'
        f'volume_transport = "{"virtiofs" if any(v.transport == "virtiofs" for v in inputs.volumes) else "9p"}"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(TEST_CONFIG_HOME))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VMCTL_MODE", raising=False)
    monkeypatch.delenv("VMCTL_CONNECT", raising=False)

    # the case's image, imported into the private store
    from vmctl.config import load_settings
    from vmctl.storage.store import ImageStore

    disk = tmp_path / "disk.qcow2"
    import subprocess

    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    extra = {}
    if inputs.boot_kind == "kernel":
        (tmp_path / "vmlinuz").write_bytes(b"kernel")
        (tmp_path / "initrd.img").write_bytes(b"initrd")
        extra = dict(kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img",
                     cmdline=inputs.cmdline)
    else:
        extra = dict(firmware=inputs.firmware)
    store = ImageStore.from_settings(load_settings())
    image = store.import_image(disk, inputs.image_ref, cloud_init=inputs.seed is not None, **extra)

    argv = _argv(line)
    if argv[0] == "--host":   # a vmctl host, as `vmctl host add` would have written it
        import json

        hosts = tmp_path / "hosts.json"
        hosts.write_text(json.dumps({"default": None, "hosts": {argv[1]: {
            "uri": f"qemu+tcp://{HOST_ADDRESS}/system", "root": "/mnt/vmctl", "mode": "hosted",
            "address": HOST_ADDRESS, "accelerator": "tcg"}}}))
        monkeypatch.setenv("VMCTL_HOSTS", str(hosts))
    pos = argv.index("create") + 2
    argv[pos:pos] = ["--uuid", inputs.uuid]
    if inputs.ssh_host_port:
        argv[pos:pos] = ["--ssh-port", str(inputs.ssh_host_port)]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    xml = result.output

    replacements = {str(root): ROOT, image.id: IMAGE_ID}
    if inputs.boot_kind == "kernel":
        replacements[str(image.kernel)] = inputs.kernel
        replacements[str(image.initrd)] = inputs.initrd
    for actual, golden in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        xml = xml.replace(actual, golden)
    xml = re.sub(r'created="[^"]*"', f'created="{CREATED}"', xml)
    if inputs.record_json:   # the record holds this run's host key and time: checked, then pinned
        import json
        from lxml import etree

        doc = etree.fromstring(xml.encode())
        el = doc.find("metadata/{https://vmctl.dev/xmlns/instance/1}instance/{https://vmctl.dev/xmlns/instance/1}record")
        rec = json.loads(el.text)
        assert (rec["host"], rec["ssh_host"], rec["ssh_port"], rec["layers"]) == (
            argv[1], HOST_ADDRESS, inputs.ssh_host_port, [image.layer_digests[-1]])
        assert rec["ports"] == [{"host": HOST_ADDRESS, "host_port": 8080, "guest_port": 80, "proto": "tcp"}]
        from xml.sax.saxutils import escape

        assert escape(el.text) in xml
        xml = xml.replace(escape(el.text), escape(HOST_RECORD))
    xml = re.sub(r"<vmctl:hostkey>[^<]*</vmctl:hostkey>", f"<vmctl:hostkey>{HOST_KEY}</vmctl:hostkey>", xml)
    xml = re.sub(r"<genid>[^<]*</genid>", f"<genid>{GENID}</genid>", xml)
    assert xml == golden_path(case).read_text()
