"""Golden files: the table of CLI lines in golden_cases.py against tests/data/domain/*.xml.

``VMCTL_REGENERATE=1 pytest tests/xml`` rewrites the golden files; review them as a diff. Every
golden file must validate against libvirt's domain.rng, every ``*-invalid.xml`` must not, and every
property of the model must be exercised by at least one golden file (virtinst's rule: an unused
property is an untested one).
"""

from __future__ import annotations

import os

import pytest
from lxml import etree

from golden_cases import CASES, golden_files, golden_path, invalid_files
from vmctl.core.plan import plan_domain
from vmctl.profiles import load_profile
from vmctl.xml import base as xml_base
from vmctl.xml.base import Child, Children, iter_node_props, iter_tree
from vmctl.xml.domain import Domain

REGENERATE = os.environ.get("VMCTL_REGENERATE") == "1"


def render(case: str) -> str:
    _, profile_name, inputs = CASES[case]
    return plan_domain(load_profile(profile_name), inputs).to_xml()


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case, test_profiles):
    xml = render(case)
    path = golden_path(case)
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(xml)
    assert path.is_file(), f"{path} missing: run with VMCTL_REGENERATE=1 and review the diff"
    assert path.read_text() == xml, f"{case}: output differs from {path.name}"


def test_no_orphan_golden_files():
    assert {p.stem for p in golden_files()} == set(CASES)


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: p.name)
def test_golden_validates_against_libvirt_schema(path, domain_rng):
    doc = etree.parse(str(path))
    ok = domain_rng.validate(doc)
    assert ok, f"{path.name}: {domain_rng.error_log}"


def test_there_are_invalid_cases():
    assert len(invalid_files()) >= 8


@pytest.mark.parametrize("path", invalid_files(), ids=lambda p: p.name)
def test_invalid_inputs_are_refused_by_schema(path, domain_rng):
    doc = etree.parse(str(path))
    assert not domain_rng.validate(doc), f"{path.name} should not validate"


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: p.name)
def test_golden_listens_only_on_loopback(path):
    """Graphics and forwards listen on 127.0.0.1; a VM on a vmctl host forwards on the host's
    address instead (the golden host-* cases use the loopback address 127.0.0.2 for it)."""
    doc = etree.parse(str(path))
    want = "127.0.0.2" if path.name.startswith("host-") else "127.0.0.1"
    for attr in doc.xpath("//graphics/@listen | //graphics/listen/@address"):
        assert attr == "127.0.0.1"
    for attr in doc.xpath("//portForward/@address"):
        assert attr == want
    for arg in doc.xpath("//*[local-name()='arg']/@value"):
        for part in arg.split(","):
            if part.startswith("hostfwd="):
                assert part.split(":")[1] == want, part


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: p.name)
def test_golden_parses_back_to_the_same_text(path):
    text = path.read_text()
    assert Domain.from_xml(text).to_xml() == text


def _declared_props() -> set[tuple[str, str]]:
    """(class, property) for every Prop of every model class reachable from Domain."""
    out: set[tuple[str, str]] = set()
    seen: set[type] = set()

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen.add(cls)
        for klass in cls.__mro__:
            for name, attr in vars(klass).items():
                if isinstance(attr, xml_base.Prop):
                    out.add((cls.__name__, name))
                elif isinstance(attr, (Child, Children)):
                    walk(attr.cls)

    walk(Domain)
    return out


def test_every_model_property_is_exercised_by_the_golden_set():
    declared = _declared_props()
    used: set[tuple[str, str]] = set()
    commandline_used = False
    for path in golden_files():
        d = Domain.from_xml(path.read_text())
        commandline_used |= bool(d.qemu_commandline.args)
        for node in iter_tree(d):
            for klass, name, value in iter_node_props(node):
                prop = vars(klass)[name]
                if value is not None and not (prop.kind == "present" and value is False):
                    used.add((type(node).__name__, name))
    missing = sorted(declared - used)
    assert not missing, f"model properties no golden file exercises: {missing}"
    assert commandline_used
