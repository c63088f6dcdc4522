"""Readiness against real SSH servers and against ports that only pretend to be one."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from vmctl.errors import GuestNotReady, HostKeyMismatch
from vmctl.guest.keys import fingerprint, new_ed25519_keypair
from vmctl.guest.ready import wait_ready
from vmctl.guest.serial import serial_tail
from vmctl.guest.ssh import GuestSession

pytestmark = pytest.mark.contract


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ready_succeeds_after_address_appears(server, client_key):
    calls = []
    steps = []

    def address():
        calls.append(1)
        return None if len(calls) < 3 else (server.host, server.port)

    start = time.monotonic()
    got = wait_ready(address, user=server.user, client_key=client_key, host_key_line=server.host_key_line,
                     timeout=20, serial_log=None, progress=lambda step, detail: steps.append(step))
    assert got == (server.host, server.port)
    assert time.monotonic() - start < 5
    assert steps[-1] == "ready"
    for step in ("address", "tcp", "banner", "hostkey", "auth"):
        assert step in steps


def test_wrong_pinned_host_key_is_refused_at_once(server, client_key):
    _, other = new_ed25519_keypair()
    start = time.monotonic()
    with pytest.raises(HostKeyMismatch) as info:
        wait_ready(lambda: (server.host, server.port), user=server.user, client_key=client_key,
                   host_key_line=other, timeout=30, serial_log=None)
    assert time.monotonic() - start < 5  # no retry until the deadline
    msg = str(info.value)
    assert fingerprint(other) in msg and fingerprint(server.host_key_line) in msg
    assert "\n" not in msg
    with pytest.raises(HostKeyMismatch):
        GuestSession(server.host, server.port, user=server.user, client_key=client_key,
                     host_key_line=other).open()


def test_pinned_key_of_another_type_is_a_mismatch(server, client_key):
    """The server has no key of the pinned type: still a mismatch, naming the key it does have."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    with pytest.raises(HostKeyMismatch) as info:
        GuestSession(server.host, server.port, user=server.user, client_key=client_key,
                     host_key_line=pub, connect_timeout=5).open()
    assert fingerprint(pub) in str(info.value)
    assert fingerprint(server.host_key_line) in str(info.value)


def test_refused_client_key_fails_at_auth(server, tmp_path):
    from vmctl.guest.keys import ensure_client_key

    stranger = ensure_client_key(tmp_path / "other-keys")
    with pytest.raises(GuestNotReady) as info:
        wait_ready(lambda: (server.host, server.port), user=server.user, client_key=stranger,
                   host_key_line=server.host_key_line, timeout=1.5, serial_log=None)
    assert info.value.step == "auth"
    assert "refused vmctl's key" in str(info.value)


def _serial_log(tmp_path):
    log = tmp_path / "serial.log"
    lines = [f"[ {i:4d}.000] boot message number {i}\r\n" for i in range(60)]
    log.write_bytes("".join(lines).encode() + b"\x1b[0m\x1b[1;32mlogin:\x1b[0m still booting\r\n")
    return log


def test_server_down_names_step_and_shows_serial_tail(tmp_path, client_key):
    port = free_port()  # nothing listens there
    log = _serial_log(tmp_path)
    _, host_line = new_ed25519_keypair()
    start = time.monotonic()
    with pytest.raises(GuestNotReady) as info:
        wait_ready(lambda: ("127.0.0.1", port), user="root", client_key=client_key, host_key_line=host_line,
                   timeout=1.5, serial_log=log)
    elapsed = time.monotonic() - start
    assert 1.4 < elapsed < 3
    err = info.value
    assert err.step == "tcp"
    assert "'tcp'" in str(err) and "\n" not in str(err)
    assert "boot message number 59" in err.details
    assert "login: still booting" in err.details  # escape sequences removed
    assert "boot message number 41" in err.details
    assert "boot message number 40" not in err.details  # only the tail (20 lines)
    assert err.exit_code == 8


def test_no_address_fails_at_address_step(client_key, tmp_path):
    _, host_line = new_ed25519_keypair()
    with pytest.raises(GuestNotReady) as info:
        wait_ready(lambda: None, user="root", client_key=client_key, host_key_line=host_line,
                   timeout=0.5, serial_log=tmp_path / "missing.log")
    assert info.value.step == "address"
    assert "empty or unreadable" in info.value.details


class _FakePort:
    """A TCP port like QEMU's hostfwd before the guest listens: accepts, then stalls or closes."""

    def __init__(self, behaviour: str):
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.held = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.behaviour == "close":
                conn.close()
            elif self.behaviour == "garbage":
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                self.held.append(conn)
            else:
                self.held.append(conn)  # stall: keep it open, say nothing

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize("behaviour", ["stall", "close", "garbage"])
def test_port_without_ssh_banner_fails_at_banner(behaviour, client_key, tmp_path):
    fake = _FakePort(behaviour)
    _, host_line = new_ed25519_keypair()
    try:
        with pytest.raises(GuestNotReady) as info:
            wait_ready(lambda: ("127.0.0.1", fake.port), user="root", client_key=client_key,
                       host_key_line=host_line, timeout=2.0, serial_log=None, attempt_timeout=0.5)
    finally:
        fake.close()
    assert info.value.step == "banner", str(info.value)
    assert fake.accepted >= 2  # it kept retrying, with short attempts


def test_ready_is_noticed_soon_after_the_server_starts(dropbear, client_key):
    """A server that appears while waiting is picked up within the capped backoff."""
    fake_port = free_port()
    switch_at = time.monotonic() + 1.0

    def address():
        return ("127.0.0.1", fake_port) if time.monotonic() < switch_at else (dropbear.host, dropbear.port)

    wait_ready(address, user=dropbear.user, client_key=client_key, host_key_line=dropbear.host_key_line,
               timeout=10, serial_log=None)
    assert time.monotonic() - switch_at < 1.5


def test_serial_ready_line_and_fingerprints_are_reported(tmp_path, client_key):
    _, host_line = new_ed25519_keypair()
    log = tmp_path / "serial.log"
    log.write_text(
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        "256 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA root@g (ED25519)\n"
        "-----END SSH HOST KEY FINGERPRINTS-----\n"
        "vmctl-guest: ready\n"
    )
    with pytest.raises(GuestNotReady) as info:
        wait_ready(lambda: ("127.0.0.1", free_port()), user="root", client_key=client_key,
                   host_key_line=host_line, timeout=0.3, serial_log=log)
    details = info.value.details
    assert "fingerprints" in details
    assert "do not include the pinned key" in details
    assert serial_tail(log, 1) == "vmctl-guest: ready"


def test_ready_line_on_serial_cuts_a_stalled_attempt_short(dropbear, client_key, tmp_path):
    """hostfwd holds a connection made before the guest listened; the console's ready line makes
    wait_ready drop it and connect again at once instead of waiting out the attempt timeout."""
    fake = _FakePort("stall")
    log = tmp_path / "serial.log"
    log.write_text("vmctl-guest: ready\n")  # a previous boot's line: not a reason to retry
    ready_at = []

    def address():
        return (dropbear.host, dropbear.port) if ready_at else ("127.0.0.1", fake.port)

    def announce():
        time.sleep(0.8)
        log.write_text("booting\n")  # new boot, log truncated
        time.sleep(0.2)
        ready_at.append(time.monotonic())
        with open(log, "a") as fh:
            fh.write("vmctl-guest: up 1.0 s\r\nvmctl-guest: ready\r\n")

    threading.Thread(target=announce, daemon=True).start()
    try:
        wait_ready(address, user=dropbear.user, client_key=client_key, host_key_line=dropbear.host_key_line,
                   timeout=30, serial_log=log, attempt_timeout=20)
    finally:
        fake.close()
    assert ready_at and time.monotonic() - ready_at[0] < 5  # not the 20 s attempt timeout
    assert fake.accepted == 1


def test_ready_line_watch_reads_only_new_lines(tmp_path):
    from vmctl.guest.ready import ReadyLineWatch

    log = tmp_path / "serial.log"
    watch = ReadyLineWatch(log)  # no log yet
    assert not watch.new_ready()
    log.write_bytes(b"vmctl-guest: rea")
    assert not watch.new_ready()
    with open(log, "ab") as fh:
        fh.write(b"dy\r\n")
    assert watch.new_ready()
    assert not watch.new_ready()  # once per line
    with open(log, "ab") as fh:
        fh.write(b"x vmctl-guest: ready\n")  # not on a line of its own
    assert not watch.new_ready()
    log.write_bytes(b"vmctl-guest: ready\n")  # shorter: a new boot's log
    assert watch.new_ready()
    assert not ReadyLineWatch(log).new_ready()  # what was there at the start does not count
