"""doctor finds and mends what a killed create leaves: staging dir, 'creating' domain, stale hold."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _virsh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True)


def test_doctor_mends_leftovers_of_a_killed_create(e2e_vmctl, tmp_path):
    vmctl = e2e_vmctl
    # What a create killed between its steps leaves behind, made by hand:
    xml = vmctl("create", "ghost1", "--image", "tiny", "--print-xml").stdout
    assert ">creating</vmctl:state>" in xml
    (tmp_path / "ghost1.xml").write_text(xml)
    assert _virsh("define", str(tmp_path / "ghost1.xml")).returncode == 0
    staging = vmctl.root / "instances" / ".creating-ghost2-0badc0de"
    staging.mkdir(parents=True)
    (staging / "disk.qcow2").write_bytes(b"partial")
    image_id = json.loads(vmctl("image", "inspect", "tiny").stdout)[0]["id"]
    from vmctl.storage.store import ImageStore

    ImageStore(vmctl.root).hold(image_id, "instance:ghost3")
    ImageStore(vmctl.root).hold(image_id, "snapshot:ghost4/s1")
    try:
        found = json.loads(vmctl("doctor", "--json").stdout)
        kinds = {(f["kind"], f["subject"] if f["kind"] == "stale-hold" else Path(f["subject"]).name)
                 for f in found}
        assert {("creating-domain", "ghost1"), ("staging-dir", staging.name),
                ("stale-hold", "instance:ghost3"), ("stale-hold", "snapshot:ghost4/s1")} <= kinds
        assert not any(f["fixed"] for f in found)
        assert sorted(json.loads(vmctl("image", "inspect", "tiny").stdout)[0]["holders"]) == [
            "instance:ghost3", "snapshot:ghost4/s1"]

        fixed = json.loads(vmctl("doctor", "--fix", "--json").stdout)
        assert all(f["fixed"] for f in fixed if f["fixable"])
        assert not staging.exists()
        assert "ghost1" not in _virsh("list", "--all", "--name").stdout.split()
        assert json.loads(vmctl("image", "inspect", "tiny").stdout)[0]["holders"] == []
        assert vmctl("doctor").stdout.strip() == "nothing to mend"
    finally:
        _virsh("undefine", "ghost1")
