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


def test_tags():
    assert check_tag("24.04") == "24.04"
    for bad in ("", "a:b", "a/b", "x" * 129, "-x"):
        with pytest.raises(UsageError):
            check_tag(bad)


@pytest.mark.parametrize("name,fragment", BAD_NAMES)
def test_cli_refuses_bad_vm_names_with_usage_exit_code(cli_run, tmp_path, name, fragment):
    if "\x00" in name:
        pytest.skip("argv cannot carry NUL")
    disk = tmp_path / "d.qcow2"
    disk.write_bytes(b"QFI\xfb" + b"\0" * 508)
    result = cli_run("create", "--image", str(disk), "--print-xml", "--", name)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmctl: error: invalid VM name")
    assert result.stdout == ""
