"""`--port` parsing: HOST:GUEST[/proto], loopback host addresses only."""

from __future__ import annotations

import pytest

from vmctl.core.ports import PortForward, check_forwards, parse_port
from vmctl.errors import UsageError


@pytest.mark.parametrize("spec,expected", [
    ("8080:80", PortForward(8080, 80, "tcp", "127.0.0.1")),
    ("8080:80/tcp", PortForward(8080, 80, "tcp", "127.0.0.1")),
    ("5353:53/udp", PortForward(5353, 53, "udp", "127.0.0.1")),
    ("5353:53/UDP", PortForward(5353, 53, "udp", "127.0.0.1")),
    ("127.0.0.1:8080:80", PortForward(8080, 80, "tcp", "127.0.0.1")),
    ("127.1.2.3:1:65535/udp", PortForward(1, 65535, "udp", "127.1.2.3")),
])
def test_valid(spec, expected):
    fwd = parse_port(spec)
    assert fwd == expected
    assert parse_port(fwd.spec) == fwd


@pytest.mark.parametrize("spec,match", [
    ("", "HOST:GUEST"),
    ("80", "HOST:GUEST"),
    ("0:80", "host port must be 1-65535"),
    ("8080:65536", "guest port must be 1-65535"),
    ("8080:80/sctp", "tcp or udp"),
    ("0.0.0.0:8080:80", "not a loopback"),
    ("192.168.1.1:8080:80", "not a loopback"),
    ("localhost:8080:80", "not an IPv4 address"),
    ("[::1]:8080:80", "use"),
    ("a:b", "not a number"),
    ("-1:80", "not a number"),
    ("8080:80:90:100", "use"),
    ("99999999999:80", "not a number"),
])
def test_invalid(spec, match):
    with pytest.raises(UsageError, match=match):
        parse_port(spec)


def test_str():
    assert str(parse_port("8080:80")) == "127.0.0.1:8080->80/tcp"


def test_check_forwards_conflicts():
    a, b = parse_port("8080:80"), parse_port("8080:81")
    with pytest.raises(UsageError, match="same host port"):
        check_forwards([a, b])
    assert check_forwards([a, parse_port("8080:80/udp")])
    with pytest.raises(UsageError, match="SSH"):
        check_forwards([a], reserved=(8080,))
