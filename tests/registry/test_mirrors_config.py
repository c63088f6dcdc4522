"""Where mirrors come from: vmctl's ``[registries."HOST"]`` tables and containers-registries.conf(5),
their precedence, how a reference's repository is rewritten for a mirror, and one-line errors for
bad types (no server needed)."""

from __future__ import annotations

import pytest

from vmctl.config import load_settings
from vmctl.errors import UsageError
from vmctl.registry import mirrors
from vmctl.registry.refs import require_registry_ref


@pytest.fixture
def conf(tmp_path, monkeypatch, vmctl_root):
    """Write vmctl's config and registries.conf files: conf(vmctl=..., user=..., system=...)."""
    def write(vmctl: str = "", user: str | None = None, system: str | None = None):
        (tmp_path / "no-config.toml").write_text(vmctl)
        paths = []
        for name, text in (("user.conf", user), ("system.conf", system)):
            path = tmp_path / name
            if text is not None:
                path.write_text(text)
            paths.append(str(path))   # a missing file is simply not there
        monkeypatch.setenv("VMCTL_REGISTRIES_CONF", ":".join(paths))
        return load_settings()
    return write


def routes(settings, ref: str) -> list[tuple[str, str, str | None, bool, str]]:
    return [(r.mirror.host, r.repo, r.mirror.scheme, r.mirror.insecure, r.mirror.source.rsplit("/", 1)[-1])
            for r in mirrors.routes_for(require_registry_ref(ref), settings)]


def test_vmctl_config_mirrors_in_order_with_scheme_and_namespace(conf):
    settings = conf('insecure_registries = ["secure.example:443"]\n'
                    '[registries."docker.io"]\n'
                    'mirrors = ["https://mirror.gcr.io", "http://127.0.0.1:5001/hub/", "https://secure.example:443"]\n')
    assert settings.registry_mirrors == (("docker.io", ("https://mirror.gcr.io", "http://127.0.0.1:5001/hub/",
                                                         "https://secure.example:443")),)
    assert routes(settings, "docker.io/library/debian:12") == [
        ("mirror.gcr.io", "library/debian", "https", False, "no-config.toml"),
        ("127.0.0.1:5001", "hub/library/debian", "http", True, "no-config.toml"),   # http:// is plain HTTP
        ("secure.example:443", "library/debian", "https", True, "no-config.toml"),  # listed insecure
    ]
    assert routes(settings, "quay.io/x/y:1") == []


@pytest.mark.parametrize("text, error", [
    ("registries = 3", 'registries must be tables: [registries."HOST"]'),
    ('registries = {"a.io" = 1}', 'registries."a.io" must be a table with mirrors'),
    ('[registries."a.io"]\nmirrors = "https://m"', 'registries."a.io".mirrors must be a list of URLs'),
    ('[registries."a.io"]\nmirrors = [1]', 'registries."a.io".mirrors must be a list of URLs'),
    ('[registries."a.io"]\nmirrors = ["m.example"]', "'m.example' is not an http:// or https:// URL"),
    ('[registries."a.io"]\nmirrors = ["ftp://m.example"]', "is not an http:// or https:// URL"),
    ('[registries."a.io"]\nmirrors = ["https://u:p@m.example"]', "is not an http:// or https:// URL"),
    ('[registries."a.io"]\nmirrors = ["https://m.example:x"]', "is not an http:// or https:// URL"),
    ('[registries."a.io"]\nmirror = []', 'registries."a.io": unknown setting(s) mirror'),
    ('[registries.docker.io]\nmirrors = []', 'quote a host that has dots: [registries."docker.io"]'),
    ('[registries."a/b"]\nmirrors = []', 'registries."a/b": expected a registry HOST[:PORT]'),
])
def test_vmctl_config_bad_types_are_one_line_usage_errors(conf, text, error):
    with pytest.raises(UsageError) as exc:
        conf(text)
    assert error in exc.value.message and "\n" not in exc.value.message
    assert exc.value.message.startswith("config file ")


REGISTRIES_CONF = """
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"

[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror.example:5000/dockerhub"
insecure = true
[[registry.mirror]]
location = "by-digest.example"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "by-tag.example"
pull-from-mirror = "tag-only"

[[registry]]
prefix = "docker.io/library"
location = "docker.io/library"
[[registry.mirror]]
location = "library-mirror.example/lib"

[[registry]]
prefix = "example.com/foo"
location = "internal.example.net/bar"
mirror-by-digest-only = true
[[registry.mirror]]
location = "mirror-0.local/mirror-for-foo"

[[registry]]
prefix = "*.wild.example"
[[registry.mirror]]
location = "wild-mirror.local"

[[registry]]
prefix = "tagged.example/x:1"
[[registry.mirror]]
location = "ignored.local"
"""


def test_registries_conf_prefixes_rewrites_and_pull_modes(conf):
    settings = conf(user=REGISTRIES_CONF)
    # a tag pull: the digest-only mirror is left out; the namespace is the mirror's
    assert routes(settings, "docker.io/team/app:1") == [
        ("mirror.example:5000", "dockerhub/team/app", None, True, "user.conf"),
        ("by-tag.example", "team/app", None, False, "user.conf"),
    ]
    digest = "sha256:" + "a" * 64
    assert [h for h, *_ in routes(settings, f"docker.io/team/app@{digest}")] == ["mirror.example:5000",
                                                                              "by-digest.example"]
    # the longest prefix wins
    assert routes(settings, "docker.io/library/debian:12") == [
        ("library-mirror.example", "lib/debian", None, False, "user.conf")]
    # a location other than the prefix comes after the mirrors; mirror-by-digest-only holds for mirrors
    assert routes(settings, f"example.com/foo/img@{digest}") == [
        ("mirror-0.local", "mirror-for-foo/img", None, False, "user.conf"),
        ("internal.example.net", "bar/img", None, False, "user.conf")]
    assert [h for h, *_ in routes(settings, "example.com/foo/img:1")] == ["internal.example.net"]
    assert routes(settings, "example.com/foobar/img:1") == []      # a prefix ends at a separator
    assert routes(settings, "a.b.wild.example:5000/x/y:1") == [("wild-mirror.local", "x/y", None, False, "user.conf")]
    assert routes(settings, "tagged.example/x:1") == []            # not a simple prefix: not used


def test_precedence_vmctl_config_then_user_then_system(conf):
    system = '[[registry]]\nlocation = "a.io"\n[[registry.mirror]]\nlocation = "sys-a.local"\n' \
             '[[registry]]\nlocation = "b.io"\n[[registry.mirror]]\nlocation = "sys-b.local"\n' \
             '[[registry]]\nlocation = "c.io"\n[[registry.mirror]]\nlocation = "sys-c.local"\n'
    user = '[[registry]]\nlocation = "b.io"\n[[registry.mirror]]\nlocation = "user-b.local"\n' \
           '[[registry]]\nlocation = "c.io"\n'          # an entry without mirrors switches /etc's off
    settings = conf('[registries."a.io"]\nmirrors = ["https://vmctl-a.local"]\n', user=user, system=system)
    assert [h for h, *_ in routes(settings, "a.io/x:1")] == ["vmctl-a.local"]
    assert [h for h, *_ in routes(settings, "b.io/x:1")] == ["user-b.local"]
    assert routes(settings, "c.io/x:1") == []
    listed = [(r.prefix, [m.location for m in r.mirrors], r.source.rsplit("/", 1)[-1])
              for r in mirrors.configured(settings)]
    assert listed == [("a.io", ["https://vmctl-a.local"], "no-config.toml"),
                      ("b.io", ["user-b.local"], "user.conf")]


@pytest.mark.parametrize("text, error", [
    ("registry = 1", "registry must be [[registry]] tables"),
    ('[[registry]]\nlocation = 5', "[[registry]] 1: location must be a string"),
    ('[[registry]]\nlocation = "a.io"\ninsecure = "yes"', "[[registry]] 1: insecure must be true or false"),
    ('[[registry]]\nlocation = "a.io"\nmirror = {location = "m"}', "mirror must be [[registry.mirror]] tables"),
    ('[[registry]]\nlocation = "a.io"\n[[registry.mirror]]\ninsecure = true',
     "[[registry]] 1, [[registry.mirror]] 1: location is missing"),
    ('[[registry]]\nlocation = "a.io"\n[[registry.mirror]]\nlocation = "m.io"\ninsecure = 1',
     "[[registry.mirror]] 1: insecure must be true or false"),
    ('[[registry]]\nlocation = "a.io"\n[[registry.mirror]]\nlocation = "https://m.io"',
     "location 'https://m.io' must be host[:port][/namespace]"),
    ('[[registry]]\nlocation = "a.io"\n[[registry.mirror]]\nlocation = "m.io"\npull-from-mirror = "some"',
     "pull-from-mirror must be one of all, digest-only, tag-only"),
    ("[[registry]\n", "registries.conf"),
])
def test_registries_conf_bad_types_are_one_line_usage_errors(conf, tmp_path, text, error):
    settings = conf(system=text)
    with pytest.raises(UsageError) as exc:
        mirrors.routes_for(require_registry_ref("a.io/x:1"), settings)
    assert error in exc.value.message and "\n" not in exc.value.message
    assert str(tmp_path / "system.conf") in exc.value.message


def test_default_paths_and_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("VMCTL_REGISTRIES_CONF", raising=False)
    monkeypatch.delenv("CONTAINERS_REGISTRIES_CONF", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert [str(p) for p in mirrors.registries_conf_paths()] == [
        f"{tmp_path}/containers/registries.conf", "/etc/containers/registries.conf"]
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", "/x/r.conf")   # podman's: one file replaces both
    assert [str(p) for p in mirrors.registries_conf_paths()] == ["/x/r.conf"]
    monkeypatch.setenv("VMCTL_REGISTRIES_CONF", "")
    assert mirrors.registries_conf_paths() == []


def test_info_lists_the_mirrors(cli_run, conf):
    import json

    conf('[registries."docker.io"]\nmirrors = ["https://mirror.gcr.io", "http://127.0.0.1:5001"]\n',
         user=REGISTRIES_CONF)
    out = cli_run("--connect", "test:///default", "info", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)["registry_mirrors"]
    assert rows[0] == {"registry": "docker.io", "source": rows[0]["source"], "mirrors": [
        {"location": "https://mirror.gcr.io", "host": "mirror.gcr.io", "insecure": False, "pull": "all"},
        {"location": "http://127.0.0.1:5001", "host": "127.0.0.1:5001", "insecure": True, "pull": "all"}]}
    assert [r["registry"] for r in rows] == ["docker.io", "docker.io/library", "example.com/foo", "*.wild.example"]
    human = cli_run("--connect", "test:///default", "info").stdout.splitlines()
    at = next(i for i, line in enumerate(human) if line.startswith("Mirrors:"))
    assert human[at].startswith("Mirrors:    docker.io -> https://mirror.gcr.io, http://127.0.0.1:5001 (insecure) (")
    assert human[at + 1].startswith("            docker.io/library -> library-mirror.example/lib (")

    conf(user='[[registry]]\nlocation = 3\n')
    broken = cli_run("--connect", "test:///default", "info", "--json")
    assert broken.exit_code == 0
    assert "location must be a string" in json.loads(broken.stdout)["registry_mirrors_error"]
