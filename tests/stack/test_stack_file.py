"""Stack files: the schema's errors name the file, line and key; hostile YAML is refused before it is
expanded; what the schema cannot say (cycles, unknown dependencies, undeclared networks) is refused
with one line too; the README's file is valid."""

from __future__ import annotations

import re
import textwrap
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from vmctl.errors import UsageError
from vmctl.stack.file import load
from vmctl.stack.spec import from_data, seconds

README = Path(__file__).resolve().parents[2] / "README.md"
GOOD = """\
name: shop
vms:
  db:
    image: tiny
  web:
    image: tiny
    depends_on: [db]
"""


def readme_stack() -> str:
    """The stack file of the README's "Stacks" section (the ```yaml block that starts with
    ``# vmctl.yaml``)."""
    text = README.read_text()
    (block,) = re.findall(r"```yaml\n(# vmctl\.yaml\n.*?)```", text, re.S)
    return block


def _load(tmp_path: Path, text: str):
    f = tmp_path / "vmctl.yaml"
    f.write_text(textwrap.dedent(text))
    return from_data(load(f), f)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(UsageError) as e:
        _load(tmp_path, text)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_a_good_file_and_its_order(tmp_path):
    spec = _load(tmp_path, GOOD)
    assert spec.name == "shop" and spec.order() == ["db", "web"]
    assert spec.vm_name("web") == "shop-web"
    assert list(spec.networks) == ["default"]          # compose's implicit network
    assert spec.vms["web"].depends_on == (("db", "started"),)


def test_the_readme_stack_is_valid(tmp_path):
    spec = _load(tmp_path, readme_stack())
    assert spec.order().index("db") < spec.order().index("web")
    assert spec.vms["db"].healthcheck is not None and spec.volumes


def test_the_default_name_is_the_directory(tmp_path):
    d = tmp_path / "My Project_2"
    d.mkdir()
    (d / "vmctl.yaml").write_text("vms:\n  a:\n    image: tiny\n")
    assert from_data(load(d / "vmctl.yaml"), d / "vmctl.yaml").name == "my-project-2"


@pytest.mark.parametrize("text, line, words", [
    ("vms:\n  web:\n    image: tiny\n    memory: [1]\n", 4, "vms.web.memory"),
    ("vms:\n  web:\n    image: tiny\n    cpus: 0\n", 4, "vms.web.cpus"),
    ("vms:\n  web:\n    image: tiny\n    colour: red\n", 2, "unknown key colour"),
    ("vms:\n  web:\n    cpus: 1\n", 2, "exactly one of image: or build:"),
    ("vms:\n  web:\n    image: a\n    build: .\n", 2, "exactly one of image: or build:"),
    ("vms:\n  Web_1:\n    image: tiny\n", 2, "'Web_1' is not a valid name"),
    ("name: ../etc\nvms:\n  a:\n    image: tiny\n", 1, "not a valid name"),
    ("vms:\n  a:\n    image: tiny\n    healthcheck:\n      test: true\n      interval: soon\n", 5, "healthcheck.test"),
    ("vms:\n  a:\n    image: tiny\n    healthcheck:\n      test: x\n      interval: soon\n", 6, "not a duration"),
    ("vms:\n  a:\n    image: tiny\n    depends_on:\n      b: {condition: sometime}\n", 5, "depends_on.b.condition"),
    ("vms:\n  a:\n    image: tiny\n    networks:\n      front: {ipv4_address: 10.1.2.300}\n", 5, "ipv4_address"),
    ("vms: {}\n", 1, "vms"),
    ("vms:\n  a:\n    image: tiny\nextra: 1\n", 1, "unknown key extra"),
])
def test_schema_errors_name_the_line_and_key(tmp_path, text, line, words):
    msg = _error(tmp_path, text)
    assert msg.startswith(f"{tmp_path / 'vmctl.yaml'}:{line}: "), msg
    assert words in msg, msg


@pytest.mark.parametrize("text, words", [
    ("vms:\n  a:\n    image: tiny\n    depends_on: [b]\n  b:\n    image: tiny\n    depends_on: [a]\n", "cycle: a -> b -> a"),
    ("vms:\n  a:\n    image: tiny\n    depends_on: [zz]\n", "no VM zz"),
    ("vms:\n  a:\n    image: tiny\n    depends_on: [a]\n", "cannot depend on itself"),
    ("vms:\n  a:\n    image: tiny\n  b:\n    image: tiny\n    depends_on: {a: {condition: healthy}}\n", "no healthcheck"),
    ("vms:\n  a:\n    image: tiny\n    networks: [back]\n", "network back is not declared"),
    ("vms:\n  a:\n    image: tiny\n    volumes: ['data:/srv']\n", "neither a path"),
])
def test_what_the_schema_cannot_say_is_refused(tmp_path, text, words):
    assert words in _error(tmp_path, text)


@pytest.mark.parametrize("text, words", [
    ("vms:\n  a: &x\n    image: tiny\n  b: *x\n", "anchors and aliases"),
    ("vms:\n  a:\n    image: tiny\n    <<: {cpus: 1}\n", "merge keys"),
    ("vms:\n  a:\n    image: tiny\n    image: other\n", ":4: image is given twice"),
    ("vms:\n  a:\n    image: tiny\n  1: {}\n", "plain strings"),
    ("vms:\n  a:\n    image: 'tiny\n", "not valid YAML"),
    ("", "empty"),
    ("- just\n- a list\n", "(top level)"),
    ("vms:\n  a:\n    image: !!python/object/apply:os.system ['true']\n", "tag"),
    ("vms:\n  a:\n    image: !!binary aGVsbG8=\n", "tag"),
])
def test_hostile_or_broken_yaml_is_one_line(tmp_path, text, words):
    assert words in _error(tmp_path, text)


def test_a_billion_laughs_is_refused_before_it_expands(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    tracemalloc.start()
    msg = _error(tmp_path, "\n".join(lines) + "\nvms: {a: {image: tiny}}\n")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "aliases" in msg and peak < 32 << 20, peak


def test_a_deep_or_huge_file_is_refused(tmp_path):
    assert "too deep" in _error(tmp_path, "vms:\n  a:\n    image: tiny\nx: " + "[" * 40 + "]" * 40 + "\n")
    f = tmp_path / "vmctl.yaml"
    f.write_text("vms:\n  a:\n    image: tiny\n#" + "x" * (300 << 10) + "\n")
    with pytest.raises(UsageError, match="larger than|too large|bytes"):
        load(f)


def test_durations():
    assert (seconds("2s"), seconds("500ms"), seconds("1.5m"), seconds("3")) == (2, 0.5, 90, 3)


NAME = st.text(alphabet=st.sampled_from("abcXYZ019-_./;' $\n"), min_size=0, max_size=40)


@settings(max_examples=150, deadline=None)
@given(name=NAME)
def test_any_vm_name_is_valid_dns_label_or_one_line_error(tmp_path_factory, name):
    """Names become libvirt names and hostnames: either a DNS label, or refused in one line."""
    d = tmp_path_factory.mktemp("names")
    f = d / "vmctl.yaml"
    import json
    f.write_text(f"vms:\n  {json.dumps(name)}:\n    image: tiny\n")
    try:
        spec = from_data(load(f), f)
    except UsageError as e:
        assert "\n" not in str(e)
        return
    (short,) = spec.vms
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", short) and len(short) <= 32
