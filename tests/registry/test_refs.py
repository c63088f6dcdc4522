"""Registry references (model tier)."""

from __future__ import annotations

import pytest

from vmctl.errors import UsageError
from vmctl.registry.refs import normalize_host, parse_registry_ref, require_registry_ref

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text,host,repo,tag,digest", [
    ("localhost:5000/tiny:latest", "localhost:5000", "tiny", "latest", None),
    ("localhost:5000/tiny", "localhost:5000", "tiny", "latest", None),
    ("localhost/tiny", "localhost", "tiny", "latest", None),
    ("127.0.0.1:5000/a/b/c:v1.2", "127.0.0.1:5000", "a/b/c", "v1.2", None),
    (f"reg.example.com/x@{D}", "reg.example.com", "x", None, D),
    (f"reg.example.com/x:1@{D}", "reg.example.com", "x", "1", D),
    ("[::1]:5000/x:y", "[::1]:5000", "x", "y", None),
    ("docker.io/debian", "docker.io", "library/debian", "latest", None),
    ("index.docker.io/me/app:2", "docker.io", "me/app", "2", None),
])
def test_registry_refs(text, host, repo, tag, digest):
    ref = parse_registry_ref(text)
    assert (ref.host, ref.repo, ref.tag, ref.digest) == (host, repo, tag, digest)
    assert ref.reference == (digest or tag)


def test_round_trip_and_api_host():
    assert str(parse_registry_ref("localhost:5000/tiny")) == "localhost:5000/tiny:latest"
    assert str(parse_registry_ref(f"h.io/x@{D}")) == f"h.io/x@{D}"
    assert parse_registry_ref("docker.io/debian").api_host == "registry-1.docker.io"
    assert parse_registry_ref("localhost:5000/t").api_host == "localhost:5000"


@pytest.mark.parametrize("text", ["tiny", "tiny:latest", "debian/12", "library/debian:12", f"x@{D}", ""])
def test_local_names_are_not_registry_refs(text):
    assert parse_registry_ref(text) is None
    with pytest.raises(UsageError, match="does not name a registry"):
        require_registry_ref(text)


@pytest.mark.parametrize("text", ["localhost:5000/Tiny", "localhost:5000/a//b", "localhost:5000/x:bad tag",
                                  "localhost:5000/x@sha256:abc", "localhost:5000/", "h.io/x:"])
def test_malformed_registry_refs(text):
    with pytest.raises(UsageError):
        parse_registry_ref(text)


def test_normalize_host():
    assert normalize_host("https://localhost:5000/v2/") == "localhost:5000"
    assert normalize_host("index.docker.io") == "docker.io"
    with pytest.raises(UsageError):
        normalize_host("bad host")


def test_push_args():
    from vmctl.registry.transfer import push_args

    assert push_args("tiny:1", "localhost:5000/x/tiny:2") == ("tiny:1", parse_registry_ref("localhost:5000/x/tiny:2"))
    assert push_args("localhost:5000/tiny") == ("localhost:5000/tiny:latest", parse_registry_ref("localhost:5000/tiny:latest"))
    assert parse_registry_ref("docker.io/debian:12").local_name == "debian"
    assert parse_registry_ref("127.0.0.1:5000/a/b:1").local_name == "127.0.0.1:5000/a/b"
    with pytest.raises(UsageError):
        push_args("tiny:1")
    with pytest.raises(UsageError):
        push_args(f"localhost:5000/tiny@{D}")
