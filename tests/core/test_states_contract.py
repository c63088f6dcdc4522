"""The state machine's contract on libvirt's test driver: every verb in every state, through the
real CLI, legal or refused, with its exit code.

The test driver reads a node file whose domains carry ``<test:runstate>``, so every state vmctl
knows — running, paused, stopping, stopped, crashed, suspended — is a real libvirt domain here
(and "missing" is a VM whose domain is not there at all). Each case runs on a fresh copy of one
data root with a vmctl record per state. A refused verb must exit with its rule's refusal (4, a
conflict; 2 where the request cannot apply to that state) and name the state; a
legal one must pass the state machine and end as that verb ends on a host with no guest behind
the domain (the expected codes below say why each is what it is).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree

from vmctl.core.states import ACTIVE, RULES, State, decide

pytestmark = pytest.mark.contract
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
RUNSTATE = {State.RUNNING: 1, State.PAUSED: 3, State.STOPPING: 4, State.STOPPED: 5, State.CRASHED: 6,
            State.SUSPENDED: 7}
STATES = [*RUNSTATE, State.MISSING]

VERBS = {  # verb -> (table action, CLI arguments for VM `vm`)
    "start": ("start", ["start", "{vm}"]),
    "stop": ("stop", ["stop", "-t", "1", "{vm}"]),
    "kill": ("kill", ["kill", "{vm}"]),
    "restart": ("restart", ["restart", "-t", "1", "{vm}"]),
    "pause": ("pause", ["pause", "{vm}"]),
    "resume": ("resume", ["resume", "{vm}"]),
    "rm": ("remove", ["rm", "{vm}"]),
    "rm -f": ("remove-force", ["rm", "-f", "{vm}"]),
    "snapshot create": ("snapshot-create", ["snapshot", "create", "{vm}", "s1"]),
    "snapshot create --memory": ("snapshot-create-memory", ["snapshot", "create", "--memory", "{vm}", "s1"]),
    "snapshot revert": ("snapshot-revert", ["snapshot", "revert", "{vm}", "nosuchsnap"]),
    "snapshot rm": ("snapshot-remove", ["snapshot", "rm", "{vm}", "nosuchsnap"]),
    "commit": ("commit", ["commit", "{vm}", "c:1"]),
    "commit --checkpoint": ("checkpoint", ["commit", "--checkpoint", "{vm}", "c:1"]),
    "exec": ("exec", ["exec", "{vm}", "--", "true"]),
    "cp": ("cp", ["cp", "{vm}:/etc/hostname", "{tmp}/copy"]),
    "ssh": ("ssh", ["ssh", "{vm}", "--", "true"]),
    "wait": ("wait", ["wait", "--timeout", "1", "{vm}"]),
    "ip": ("address", ["ip", "{vm}"]),
    "update": ("update", ["update", "{vm}", "--cpu-shares", "512"]),
}

# What a verb that the state machine lets through ends with here (no guest runs behind a test
# domain, and the test driver has no QEMU monitor and keeps no qcow2 snapshot data):
LEGAL_EXIT = {
    "exec": 8, "cp": 8, "ssh": 8, "wait": 8,   # nothing answers SSH: guest not ready
    "snapshot revert": 3, "snapshot rm": 3,    # there is no such snapshot
    "snapshot create": 11,                     # libvirt took it, the disk has no data: incomplete
    "snapshot create --memory": 11,
    "update": 7,                               # the test driver has no cgroup CPU parameters
    "commit --checkpoint": 2,                  # legal, but the test image has no vmctl guest agent
}
LIVE_COMMIT_EXIT = 7                           # a live commit needs QEMU's monitor: libvirt refuses


def _domain(name: str, disk: Path, runstate: int) -> etree._Element:
    dom = etree.Element("domain", type="test", nsmap={"test": TEST_NS})
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory").text = "262144"
    os_ = etree.SubElement(dom, "os")
    etree.SubElement(os_, "type").text = "hvm"
    devices = etree.SubElement(dom, "devices")
    d = etree.SubElement(devices, "disk", type="file", device="disk")
    etree.SubElement(d, "driver", name="qemu", type="qcow2")
    etree.SubElement(d, "source", file=str(disk))
    etree.SubElement(d, "target", dev="vda", bus="virtio")
    etree.SubElement(dom, f"{{{TEST_NS}}}runstate").text = str(runstate)
    return dom


def cli(*args: str):
    from vmctl.cli.main import cli as group

    return CliRunner().invoke(group, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A data root with base:1 and one VM record per state, and the node file of their domains."""
    base = tmp_path_factory.mktemp("states")
    root = base / "template"
    mp = pytest.MonkeyPatch()
    mp.setenv("VMCTL_ROOT", str(root))
    mp.setenv("VMCTL_CONFIG", str(base / "cfg.toml"))
    (base / "cfg.toml").write_text('accelerator = "tcg"\n')
    disk = base / "d.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    assert cli("image", "import", str(disk), "base:1").exit_code == 0
    node = etree.Element("node")
    for state in STATES:
        name = f"vm-{state}"
        result = cli("--connect", "test:///default", "create", name, "--image", "base:1")
        assert result.exit_code == 0, result.output
        if state in RUNSTATE:
            node.append(_domain(name, root / "instances" / name / "disk.qcow2", RUNSTATE[state]))
    (base / "node.xml").write_bytes(etree.tostring(node))
    mp.undo()
    return base


@pytest.fixture
def world(template, tmp_path, monkeypatch):
    import subprocess

    root = tmp_path / "root"
    shutil.copytree(template / "template", root, symlinks=True)
    # instance disks name their image layer by absolute path: point the copies at the copy's
    (layer,) = (root / "images" / "layers").glob("*.qcow2")
    for disk in (root / "instances").glob("*/disk.qcow2"):
        subprocess.run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", str(layer), str(disk)],
                       check=True)
    monkeypatch.setenv("VMCTL_ROOT", str(root))
    monkeypatch.setenv("VMCTL_CONFIG", str(template / "cfg.toml"))
    return f"test://{template / 'node.xml'}"


@pytest.mark.parametrize("state", [s.value for s in STATES])
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_in_every_state(world, tmp_path, verb, state):
    action, argv = VERBS[verb]
    vm = f"vm-{state}"
    args = [a.format(vm=vm, tmp=tmp_path) for a in argv]
    result = cli("--connect", world, *args)
    try:
        runs = decide(action, vm, state)
    except Exception:  # the table refuses: the CLI must say so, naming the state
        assert result.exit_code == RULES[action].refusal.exit_code, (verb, state, result.output)
        assert result.stderr.startswith("vmctl: error: ") and f"it is {state}" in result.stderr
        return
    if not runs:
        assert result.exit_code == 0, (verb, state, result.output)  # a no-op succeeds, as docker's
        return
    want = LEGAL_EXIT.get(verb, 0)
    if verb == "commit" and state in ("running", "paused"):
        want = LIVE_COMMIT_EXIT
    assert result.exit_code == want, (verb, state, result.output)


def test_the_table_covers_every_state_dependent_verb_and_state():
    # migrate moves a VM between two vmctl hosts (libvirt daemons with storage pools and QEMU's
    # migration), which the test driver cannot be: its states are run in tests/e2e/test_fleet_e2e.py
    assert {action for action, _ in VERBS.values()} | {"migrate"} == set(RULES)
    for rule in RULES.values():
        assert rule.legal <= set(State) and rule.noop <= set(State) and not rule.legal & rule.noop
    assert decide("start", "x", "running") is False and decide("stop", "x", "stopped") is False
    assert ACTIVE == {State.RUNNING, State.PAUSED, State.STOPPING, State.SUSPENDED, State.CRASHED}


def test_a_local_domain_without_a_vmctl_record_is_left_alone(world):
    result = cli("--connect", "test:///default", "stop", "test")   # the test driver's own domain
    assert result.exit_code == 3 and "no such VM: test" in result.stderr
