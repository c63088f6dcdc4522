"""The one naming rule: bad names are refused with the usage exit code and a clear message."""

import pytest

from vmctl.errors import UsageError
from vmctl.names import check_name, check_repository, check_tag

BAD_NAMES = [
    ("../x", "'..'"),
    ("a/b", "ASCII letters"),
    ("a'b", "ASCII letters"),
    ("<x>", "ASCII letters"),
    ("a&b", "ASCII letters"),
    ("a\nb", "ASCII letters"),
    ("", "empty"),
    ("x" * 300, "longer than 64"),
    ("café", "ASCII letters"),
    ("-lead", "starting with"),
    ("a b", "ASCII letters"),
    ("a\x00b", "ASCII letters"),
    ("..", "'..'"),
]


@pytest.mark.parametrize("name,fragment", BAD_NAMES)
def test_bad_names_refused(name, fragment):
    with pytest.raises(UsageError) as err:
        check_name(name)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["web1", "a", "db-2.prod", "X_y", "9lives", "x" * 64])
def test_good_names_accepted(name):
    assert check_name(name) == name


def test_repository_components_follow_the_rule():
    assert check_repository("library/debian") == "library/debian"
    for bad in ("a//b", "/a", "a/../b", "a/<b>"):
        with pytest.raises(UsageError):
            check_repository(bad)


def test_repository_may_start_with_a_registry_host_and_port():
    for good in ("localhost:5000/tiny", "127.0.0.1:5000/test/a-b", "registry.example.com:443/x",
                 "registry.example.com/x", "localhost/tiny"):
        assert check_repository(good) == good
    for bad in ("localhost:5000", "tiny:5000", "a/localhost:5000/x", "localhost:/x", "localhost:0/x",
                "localhost:99999/x", "localhost:50a/x", ":5000/x", "local host:5000/x", "h:5000:1/x",
                "localhost:5000//x", "localhost:5000/../x"):
        with pytest.raises(UsageError):
            check_repository(bad)


def test_pulled_names_parse_as_references():
    from vmctl.storage.refs import parse_name, parse_reference

    assert parse_name("localhost:5000/tiny") == ("localhost:5000/tiny", "latest")
    assert parse_name("127.0.0.1:5000/a/tiny:v1") == ("127.0.0.1:5000/a/tiny", "v1")
    r = parse_reference("localhost:5000/tiny@sha256:" + "a" * 64)
    assert r.repo == "localhost:5000/tiny" and r.digest == "sha256:" + "a" * 64
    assert parse_reference("localhost:5000/tiny:2").tag == "2"


def test_tags():
    assert check_tag("24.04") == "24.04"
    for bad in ("", "a:b", "a/b", "x" * 129, "-x"):
        with pytest.raises(UsageError):
            check_tag(bad)


@pytest.mark.parametrize("name,fragment", BAD_NAMES)
def test_cli_refuses_bad_vm_names_with_usage_exit_code(cli_run, tmp_path, name, fragment):
    # (in-process: click gets the argument list as it is, so even a NUL reaches vmctl's check)
    disk = tmp_path / "d.qcow2"
    disk.write_bytes(b"QFI\xfb" + b"\0" * 508)
    result = cli_run("create", "--image", str(disk), "--print-xml", "--", name)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmctl: error: invalid VM name")
    assert result.stdout == ""
