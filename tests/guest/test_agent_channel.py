"""The host end of vmctl's guest agent against a hostile peer on a real unix socket."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from vmctl.errors import GuestNotReady
from vmctl.guest.agent import AgentChannel as _Channel
from vmctl.guest.agent import Identity, dropbear_ed25519
from vmctl.seed.hostkeys import generate_host_key


class SocketTransport:
    """The transport interface of AgentChannel over a real unix socket (vmctl itself uses
    libvirt's channel stream; the peer here plays a hostile guest)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise GuestNotReady(f"c1: cannot reach the guest agent's channel ({exc.strerror})") from None

    def sendall(self, data):
        self.sock.sendall(data)

    def recv(self, size, timeout):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(size)
        except socket.timeout:
            return None

    def close(self):
        self.sock.close()


def AgentChannel(path, vm):
    return _Channel(SocketTransport(path), vm)


def _serve(path, script):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    got = []

    def run():
        conn, _ = srv.accept()
        for item in script:
            if item == "READ":
                got.append(conn.recv(65536))
            elif isinstance(item, float):
                time.sleep(item)
            else:
                conn.sendall(item)
        time.sleep(0.2)
        conn.close()
        srv.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return got, th


def test_identity_lines_and_answer(tmp_path):
    path = tmp_path / "agent.sock"
    got, th = _serve(path, ["READ", b"noise from the guest\nvmctl-agent: applied\n"])
    key = generate_host_key()
    ident = Identity("c1", "0788ecfa-ac6b", key, ("ssh-ed25519 AAAA me",), "52:54:00:01:02:03", "ab" * 16,
                     b"\x01" * 32, 1_800_000_000)
    with AgentChannel(str(path), "c1") as agent:
        agent.send(*ident.lines())
        agent.expect("applied", 5)
    th.join(2)
    text = got[0].decode()
    assert text.startswith("identity\nhostname c1\n") and text.endswith("apply\n")
    assert "time 2027-01-15 08:00:00\n" in text and "random " + "01" * 32 in text


@pytest.mark.parametrize("script, message", [
    ([b"vmctl-agent: error hostname\n"], "refused its identity"),
    ([b"x" * 100000], "overlong"),
    ([b"\n" * 200], "did not say"),
    ([], "closed"),
    ([3.0], "no answer"),
])
def test_hostile_or_silent_guest_fails_in_one_line(tmp_path, script, message):
    path = tmp_path / "agent.sock"
    _serve(path, script)
    with AgentChannel(str(path), "c1") as agent:
        t0 = time.monotonic()
        with pytest.raises(GuestNotReady, match=message) as err:
            agent.expect("applied", 1.0)
        assert time.monotonic() - t0 < 2.5 and "\n" not in str(err.value)


def test_dropbear_reads_the_key_vmctl_pinned(tmp_path):
    key = generate_host_key()
    blob = dropbear_ed25519(key)
    assert len(blob) == 83 and blob[4:15] == b"ssh-ed25519"
    (tmp_path / "k").write_bytes(blob)
    out = subprocess.run(["dropbearkey", "-y", "-f", str(tmp_path / "k")], capture_output=True, text=True,
                         check=True).stdout
    assert key.public.split()[:2] == next(line for line in out.splitlines() if line.startswith("ssh-")).split()[:2]


def test_no_socket_is_one_line(tmp_path):
    with pytest.raises(GuestNotReady, match="cannot reach"):
        AgentChannel(str(tmp_path / "missing.sock"), "c1")
