"""Property-based tests (hypothesis) of everything a user types or hands over.

For names, image references, sizes, port specs, user-data files and profile files, every input is
either accepted and rendered correctly (checked against an independent expectation, and the XML
against libvirt's RelaxNG schema) or refused with exit code 2 (3 for a reference that names no
image) and one ``vmctl: error:`` line. Never a traceback, a file outside the data root, or text
that escapes into XML or a command line. The CLI runs in-process (CliRunner with
``catch_exceptions=False``: a traceback fails the example) against libvirt's test driver.
"""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st
from lxml import etree

from tests.figures import record

pytestmark = pytest.mark.contract
RNG = etree.RelaxNG(file="/usr/share/libvirt/schemas/domain.rng")
EXAMPLES = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
MiB = 1 << 20
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data root with one image (base:1), a config home for profiles, and the files outside."""
    base = tmp_path_factory.mktemp("props")
    root = base / "root"
    env = {"VMCTL_ROOT": str(root), "VMCTL_CONFIG": str(base / "none.toml"),
           "XDG_CONFIG_HOME": str(base / "config"), "XDG_CACHE_HOME": str(base / "cache")}
    (base / "none.toml").write_text('accelerator = "tcg"\n')   # no KVM probe for these examples
    (base / "config" / "vmctl" / "profiles").mkdir(parents=True)
    from vmctl.storage.store import ImageStore

    disk = base / "disk.raw"
    disk.write_bytes(b"\0" * MiB)
    image = ImageStore(root, None).import_image(disk, "base:1", cloud_init=True, created=1)
    return base, root, env, image


@pytest.fixture(autouse=True)
def _env(monkeypatch, world):
    for k, v in world[2].items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("VMCTL_MODE", raising=False)


def vmctl(*args: str):
    from vmctl.cli.main import cli

    return CliRunner().invoke(cli, ["--connect", "test:///default", *args], catch_exceptions=False)


def outside(world) -> set[str]:
    base, root, _, _ = world
    return {str(p) for p in base.rglob("*") if root not in p.parents and p != root}


def refused(result, codes=(2,)) -> None:
    assert result.exit_code in codes, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("vmctl: error: ") and "\n" not in err, err
    assert "Traceback" not in result.output


def print_xml(*extra: str, name: str = "vm1"):
    return vmctl("create", name, "--image", "base:1", "--print-xml", *extra)


def parsed(result) -> etree._Element:
    assert result.exit_code == 0, result.output
    doc = etree.fromstring(result.stdout.encode())
    assert RNG.validate(doc), RNG.error_log
    return doc


# ------------------------------------------------------------------ names and references
@EXAMPLES
@given(st.text(min_size=0, max_size=80))
def test_vm_names(world, text):
    if text.startswith("-") or "\0" in text:
        return  # an option, or what no argv can carry
    before = outside(world)
    result = print_xml(name=text)
    if NAME_RULE.fullmatch(text) and ".." not in text:
        assert parsed(result).findtext("name") == text
    else:
        refused(result)
    assert outside(world) == before
    record("property examples (names, refs, sizes, ports, files)", 1)


@EXAMPLES
@given(st.one_of(st.text(max_size=80), st.from_regex(r"[a-z0-9./:@-]{1,40}", fullmatch=True)))
def test_image_references(world, ref):
    if ref.startswith("-") or "\0" in ref:
        return
    _, _, _, image = world
    result = vmctl("create", "vm1", "--image", ref, "--print-xml")
    if result.exit_code == 0:
        doc = parsed(result)
        assert image.id in etree.tostring(doc).decode()   # it can only be the one image there is
    else:
        refused(result, codes=(2, 3))
    record("property examples (names, refs, sizes, ports, files)", 1)


# ------------------------------------------------------------------ sizes
UNITS = {"": MiB, "m": MiB, "M": MiB, "MiB": MiB, "mb": MiB, "g": 1 << 30, "G": 1 << 30, "GiB": 1 << 30,
         "k": 1024, "K": 1024, "b": 1, "B": 1}


@EXAMPLES
@given(st.integers(min_value=0, max_value=1 << 44), st.sampled_from(sorted(UNITS)),
       st.sampled_from(["", ".5", ".25", ".0"]))
def test_memory_sizes_are_exact(world, number, unit, fraction):
    text = f"{number}{fraction}{unit}"
    want = int(Fraction(f"{number}{fraction}") * UNITS[unit])
    result = print_xml("--memory", text)
    mib = -(-want // MiB)
    if 0 < want <= 16 << 40 and mib >= 64:
        doc = parsed(result)
        assert int(doc.findtext("memory")) == mib * 1024 and doc.find("memory").get("unit") == "KiB"
    else:
        refused(result)
    record("property examples (names, refs, sizes, ports, files)", 1)


@EXAMPLES
@given(st.text(min_size=1, max_size=24))
def test_any_size_text_is_a_size_or_a_usage_error(world, text):
    if text.startswith("-") or "\0" in text:
        return
    result = print_xml("--memory", text)
    if result.exit_code == 0:
        assert re.fullmatch(r"[ \t]*[0-9.]+[ \t]*[kmgtKMGT]?([iI]?[bB])?[ \t]*", text), text  # ASCII only
        parsed(result)
    else:
        refused(result)
    record("property examples (names, refs, sizes, ports, files)", 1)


# ------------------------------------------------------------------ ports
@EXAMPLES
@given(st.integers(0, 70000), st.integers(0, 70000), st.sampled_from(["", "/tcp", "/udp", "/sctp", "/TCP"]),
       st.sampled_from(["", "127.0.0.1:", "127.1.2.3:", "0.0.0.0:", "10.0.0.1:", "::1:"]))
def test_port_specs_are_exact(world, host, guest, proto, addr):
    spec = f"{addr}{host}:{guest}{proto}"
    result = print_xml("--port", spec, "--ssh-port", "2222")
    ok = (1 <= host <= 65535 and 1 <= guest <= 65535 and proto.lower() in ("", "/tcp", "/udp")
          and addr in ("", "127.0.0.1:", "127.1.2.3:") and host != 2222)
    if ok:
        xml = etree.tostring(parsed(result)).decode()
        p = proto.lower().lstrip("/") or "tcp"
        ip = addr.rstrip(":") or "127.0.0.1"
        assert f"hostfwd={p}:{ip}:{host}-:{guest}" in xml or f'port="{host}"' in xml, xml
    else:
        refused(result)
    record("property examples (names, refs, sizes, ports, files)", 1)


@EXAMPLES
@given(st.text(min_size=1, max_size=30))
def test_any_port_text_is_a_forward_or_a_usage_error(world, text):
    if text.startswith("-") or "\0" in text:
        return
    result = print_xml("--port", text, "--ssh-port", "2222")
    if result.exit_code == 0:
        xml = etree.tostring(parsed(result)).decode()
        assert "hostfwd=" in xml or "portForward" in xml
        assert not re.search(r"[^\x20-\x7e\n\t]", text.strip()), text   # only ASCII specs pass
    else:
        refused(result)
    record("property examples (names, refs, sizes, ports, files)", 1)


# ------------------------------------------------------------------ files
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=600))
def test_user_data_files(world, tmp_path_factory, data):
    base, root, _, _ = world
    work = tmp_path_factory.mktemp("ud")
    path = work / "user-data"
    path.write_bytes(data)
    before = outside(world)
    result = vmctl("create", "ud-vm", "--image", "base:1", "--user-data", str(path))
    try:
        text_ok = True
        try:
            decoded = data.decode("utf-8")
            text_ok = "\0" not in decoded
        except UnicodeDecodeError:
            text_ok = False
        if result.exit_code == 0:
            assert text_ok
            assert (root / "instances" / "ud-vm" / "seed.iso").is_file()
        else:
            refused(result)
            assert not (root / "instances" / "ud-vm").exists()
            assert not list((root / "instances").glob(".creating-*")) if (root / "instances").exists() else True
        after = outside(world) - {str(p) for p in work.rglob("*")} - {str(work)}
        assert after == before - {str(p) for p in work.rglob("*")}
    finally:
        import shutil

        shutil.rmtree(root / "instances" / "ud-vm", ignore_errors=True)
        from vmctl.storage.store import ImageStore

        ImageStore(root, None).release("base:1", "instance:ud-vm")
    record("property examples (names, refs, sizes, ports, files)", 1)


PROFILE_KEYS = st.fixed_dictionaries({}, optional={
    "extends": st.sampled_from(["hosted", "minimal", "kvm", "nope", "../etc"]),
    "description": st.text(max_size=30),
    "machine": st.fixed_dictionaries({}, optional={
        "cpus": st.one_of(st.integers(-2, 5000), st.text(max_size=5), st.booleans()),
        "memory_mib": st.one_of(st.integers(-1, 1 << 40), st.floats(allow_nan=True), st.text(max_size=5)),
        "machine": st.one_of(st.sampled_from(["q35", "pc"]), st.text(max_size=12)),
        "firmware": st.one_of(st.sampled_from(["bios", "uefi"]), st.text(max_size=8)),
        "on_crash": st.text(max_size=10),
    }),
    "disk": st.fixed_dictionaries({}, optional={
        "bus": st.one_of(st.sampled_from(["virtio", "sata", "scsi"]), st.text(max_size=8)),
        "cache": st.text(max_size=10),
    }),
    "devices": st.fixed_dictionaries({}, optional={
        "graphics": st.one_of(st.sampled_from(["none", "vnc"]), st.text(max_size=8)),
        "rng": st.text(max_size=20),
        "balloon": st.one_of(st.booleans(), st.integers()),
    }),
})


def _toml_value(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else repr(v) if abs(v) != float("inf") else ("inf" if v > 0 else "-inf")
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)  # a TOML basic string is a JSON string for these


def _toml(doc: dict) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(PROFILE_KEYS.map(lambda d: _toml(d).encode()), st.binary(max_size=200)))
def test_profile_files(world, data):
    base = world[0]
    path = base / "config" / "vmctl" / "profiles" / "fuzz.toml"
    path.write_bytes(data)
    result = print_xml("--profile", "fuzz")
    if result.exit_code == 0:
        parsed(result)
    else:
        refused(result, codes=(2, 3))
    record("property examples (names, refs, sizes, ports, files)", 1)


@pytest.mark.parametrize("what, args", [
    ("public key", ["--ssh-key"]),
    ("user-data", ["--user-data"]),
])
def test_non_utf8_files_are_one_usage_line(world, tmp_path, what, args):
    bad = tmp_path / "latin1"
    bad.write_bytes("clé ssh-ed25519 \xe9\xff".encode("latin-1"))
    result = print_xml(*args, str(bad))
    refused(result)
    assert "not UTF-8" in result.stderr


def test_unicode_digits_in_ports_and_sizes_are_usage_errors(world):
    for args in (["--memory", "١٢٨M"], ["--memory", "１２８M"], ["--memory", "128\u212a"], ["--disk", "²G"],
                 ["--port", "８０８０:80"], ["--port", "8080:²"], ["--port", "٨٠:80"]):
        refused(print_xml(*args))
