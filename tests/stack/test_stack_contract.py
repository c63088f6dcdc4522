"""Stacks on libvirt's test driver: what `up` and `down` decide, without a guest.

The guest-side behaviour (VMs reaching each other by name, healthchecks, a killed ``up``
resuming on a real daemon) is tests/e2e/test_stack_e2e.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from vmctl.config import load_settings
from vmctl.core.session import Session
from vmctl.errors import ConflictError, UsageError
from vmctl.stack.down import down
from vmctl.stack.file import load
from vmctl.stack.networks import network_xml
from vmctl.stack.spec import from_data
from vmctl.stack.state import StackState, allocate
from vmctl.stack.status import rows
from vmctl.stack.up import up

pytestmark = pytest.mark.contract
NETWORK_RNG = Path("/usr/share/libvirt/schemas/network.rng")
FILE = """\
name: st
networks:
  front:
  back: {subnet: 10.77.0.0/24}
vms:
  db:
    image: base:1
    networks: {back: {ipv4_address: 10.77.0.50}}
  web:
    image: base:1
    memory: 300M
    networks: [front, back]
    depends_on: [db]
"""


@pytest.fixture
def session(tmp_path, monkeypatch):
    (tmp_path / "cfg.toml").write_text('accelerator = "tcg"\n')
    monkeypatch.setenv("VMCTL_CONFIG", str(tmp_path / "cfg.toml"))
    s = Session(settings=load_settings(uri="test:///default", root=tmp_path / "root"), progress=lambda *a: None)
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    s.store.import_image(disk, "base:1", cloud_init=True, created=1)
    yield s
    s.close()


def _spec(tmp_path: Path, text: str = FILE):
    d = tmp_path / "proj"
    d.mkdir(exist_ok=True)
    (d / "vmctl.yaml").write_text(text)
    return from_data(load(d / "vmctl.yaml"), d / "vmctl.yaml")


def _uuids(session, names):
    return {n: session.backend.raw.lookupByName(n).UUIDString() for n in names}


def test_up_is_idempotent_and_recreate_replaces_only_the_changed_vm(session, tmp_path):
    spec = _spec(tmp_path)
    first = up(session, spec, wait=False)
    assert first.actions == {"db": "created", "web": "created"}
    before = _uuids(session, ["st-db", "st-web"])
    assert up(session, spec, wait=False).actions == {"db": "unchanged", "web": "unchanged"}
    assert _uuids(session, ["st-db", "st-web"]) == before
    session.backend.destroy("st-db")
    assert up(session, spec, wait=False).actions == {"db": "started", "web": "unchanged"}

    changed = _spec(tmp_path, FILE.replace("memory: 300M", "memory: 320M"))
    kept = up(session, changed, wait=False)
    assert kept.actions == {"db": "unchanged", "web": "changed"}
    assert _uuids(session, ["st-db", "st-web"]) == before
    replaced = up(session, changed, recreate=True, wait=False)
    assert replaced.actions == {"db": "unchanged", "web": "recreated"}
    after = _uuids(session, ["st-db", "st-web"])
    assert after["st-db"] == before["st-db"] and after["st-web"] != before["st-web"]
    assert "<memory unit='KiB'>327680</memory>" in session.backend.xml("st-web")
    # the replacement keeps its addresses (its peers' /etc/hosts stay true)
    st = StackState.load(session.paths.stacks, "st")
    assert st.vms["web"].addresses == {"front": "10.213.0.10", "back": "10.77.0.10"}
    assert st.vms["db"].addresses == {"back": "10.77.0.50"}


def test_the_records_carry_the_stack_and_ps_shows_it(session, tmp_path):
    spec = _spec(tmp_path)
    up(session, spec, wait=False)
    rec = json.loads((session.paths.instances / "st-web" / "instance.json").read_text())
    assert rec["stack"]["name"] == "st" and rec["stack"]["vm"] == "web" and len(rec["stack"]["definition"]) == 16
    got = {r["vm"]: (r["state"], r["addresses"]) for r in rows(session, spec)}
    assert got == {"db": ("running", {"back": "10.77.0.50"}),
                   "web": ("running", {"front": "10.213.0.10", "back": "10.77.0.10"})}


def test_down_leaves_nothing_and_keeps_the_image(session, tmp_path):
    spec = _spec(tmp_path)
    up(session, spec, wait=False)
    report = down(session, "st")
    assert sorted(report.vms) == ["st-db", "st-web"]
    assert session.backend.list_states() == {} or not any(n.startswith("st-") for n in session.backend.list_states())
    assert list(session.paths.instances.iterdir()) == []
    assert not (session.paths.stacks / "st.json").exists()
    assert session.store.resolve("base:1") and session.store.holders("base:1") == []
    assert down(session, "st").vms == []   # nothing left to do: not an error


def test_a_vm_of_that_name_that_is_not_the_stacks_is_not_taken_over(session, tmp_path):
    from vmctl.core import create

    create.create(session, create.CreateRequest(name="st-db", image="base:1"))
    with pytest.raises(ConflictError, match="not stack st's"):
        up(session, _spec(tmp_path), wait=False)
    assert down(session, "st").vms == []   # down removes only what the stack made
    assert (session.paths.instances / "st-db").is_dir()


def test_allocation_is_stable_and_refuses_what_cannot_be(tmp_path):
    spec = _spec(tmp_path)
    st = allocate(spec, "hosted", None, [])
    again = allocate(spec, "hosted", StackState(**{**st.__dict__}), [])
    assert again.vms["web"].macs == st.vms["web"].macs and again.networks == st.networks
    # another stack of the store keeps its subnets and multicast groups
    other_file = FILE.replace("name: st", "name: other").replace("back: {subnet: 10.77.0.0/24}", "back:")
    other = allocate(_spec(tmp_path, other_file.replace("{back: {ipv4_address: 10.77.0.50}}", "[back]")),
                     "hosted", None, [st])
    assert other.networks["front"].subnet != st.networks["front"].subnet
    assert {(n.group, n.port) for n in other.networks.values()}.isdisjoint({(n.group, n.port) for n in st.networks.values()})
    # a stack of the same name in another store (data root) gets other groups: no shared segment
    elsewhere = allocate(spec, "hosted", None, [], salt="/another/root")
    assert {n.group for n in elsewhere.networks.values()}.isdisjoint({n.group for n in st.networks.values()})
    for bad, words in [("10.77.0.1", "not a host address"), ("10.78.0.5", "not a host address")]:
        with pytest.raises(UsageError, match=words):
            allocate(_spec(tmp_path, FILE.replace("10.77.0.50", bad)), "hosted", None, [])
    with pytest.raises(UsageError, match="overlaps 10.0.2.0/24"):
        allocate(_spec(tmp_path, FILE.replace("10.77.0.0/24", "10.0.0.0/16")), "hosted", None, [])


def test_system_networks_are_valid_libvirt_networks(tmp_path):
    spec = _spec(tmp_path, FILE.replace("back: {subnet: 10.77.0.0/24}", "back: {subnet: 10.77.0.0/24, internal: true}"))
    st = allocate(spec, "system", None, [])
    rng = etree.RelaxNG(file=str(NETWORK_RNG))
    for name in ("front", "back"):
        from vmctl.stack.networks import reservations
        xml = network_xml(spec.networks[name], st.networks[name], reservations(spec, st, name))
        doc = etree.fromstring(xml.encode())
        assert rng.validate(doc), rng.error_log
        assert (doc.find("forward") is None) == (name == "back")   # internal: no forward
    assert st.networks["back"].libvirt == "vmctl-st-back" and len(st.networks["back"].bridge) <= 15


def test_orphans_are_reported_then_removed_on_request(session, tmp_path):
    up(session, _spec(tmp_path), wait=False)
    only_db = FILE[:FILE.index("  web:")].replace("    networks: {back: {ipv4_address: 10.77.0.50}}\n",
                                                "    networks: {back: {ipv4_address: 10.77.0.50}}\n")
    spec = _spec(tmp_path, only_db.replace("  front:\n", ""))
    kept = up(session, spec, wait=False)
    assert kept.orphans == ["st-web"] and session.backend.exists("st-web")
    gone = up(session, spec, wait=False, remove_orphans=True)
    assert gone.removed == ["st-web"] and not session.backend.exists("st-web")
    assert not (session.paths.instances / "st-web").exists()


def test_system_mode_keeps_clear_of_the_daemons_other_networks(tmp_path):
    from vmctl.stack.networks import subnets_in_use

    others = {"default": "<network><name>default</name><ip address='10.213.0.1' netmask='255.255.255.0'/></network>",
              "v6": "<network><name>v6</name><ip family='ipv6' address='fd00::1' prefix='64'/></network>",
              "vmctl-st-front": "<network><name>vmctl-st-front</name><ip address='10.213.1.1' prefix='24'/></network>"}
    used = subnets_in_use(others, {"vmctl-st-front"})
    assert [str(n) for n in used] == ["10.213.0.0/24"]
    st = allocate(_spec(tmp_path), "system", None, [], in_use=used)
    assert st.networks["front"].subnet == "10.213.1.0/24" and st.networks["back"].subnet == "10.77.0.0/24"
