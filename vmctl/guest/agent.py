"""The host end of vmctl's guest agent (``/usr/lib/vmctl/agent.sh`` in vmctl's images): a
line protocol on the virtio-serial port ``org.vmctl.agent.0``.

Guest to host: ``vmctl-agent: armed | applied | ready | kept | error <what>``, through libvirt's
channel stream (so it works wherever libvirt does, whatever path QEMU's socket has). Host to guest:
``keep`` (the machine a checkpoint was taken of goes on as it was), or ``identity`` followed by
``KEY VALUE`` lines and ``apply`` (a warm-started clone's identity, applied while its link is
down), then ``network keep|renew`` once the link is up (``renew``: a DHCP lease for the new MAC),
answered by ``ready`` once its SSH server listens and it has an address. The host waits for
every answer before it closes the socket: a guest's write blocks while no host is connected. The guest is hostile: its lines are read with a
size bound and a deadline, only these exact words are understood, and nothing it says is
trusted further than "go on" — the clone's identity is proven by its SSH host key alone.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from vmctl.errors import GuestNotReady
from vmctl.seed.hostkeys import HostKey

MAX_LINE = 512
MAX_LINES = 64        # lines read while waiting for one answer (a chatty guest cannot stall us)
PREFIX = "vmctl-agent: "


def dropbear_ed25519(key: HostKey) -> bytes:
    """`key` in dropbear's own host key format (``string "ssh-ed25519"``, ``string priv||pub``),
    which the tiny guest's dropbear reads without a conversion step."""
    private = serialization.load_ssh_private_key(key.private_openssh.encode(), password=None)
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    pub = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    name = b"ssh-ed25519"
    return len(name).to_bytes(4, "big") + name + (64).to_bytes(4, "big") + raw + pub


@dataclass(frozen=True)
class Identity:
    """What makes a clone itself; every value is checked by the guest too."""

    hostname: str
    instance_id: str
    host_key: HostKey
    authorized_keys: tuple[str, ...]
    mac: str
    machine_id: str
    random: bytes
    now: float

    def lines(self) -> list[str]:
        out = ["identity", f"hostname {self.hostname}", f"instance-id {self.instance_id}",
               f"hostkey {base64.b64encode(dropbear_ed25519(self.host_key)).decode()}"]
        out += [f"authkey {k.strip()}" for k in self.authorized_keys]
        out += [f"mac {self.mac}", f"machine-id {self.machine_id}", f"random {self.random.hex()}",
                "time " + time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.now)), "apply"]
        for line in out:
            if "\n" in line or "\r" in line or len(line) > 4096:
                raise ValueError("identity line not one line")
        return out


class AgentChannel:
    """One conversation with a guest's agent over `transport`: an object with ``sendall(bytes)``,
    ``recv(size, timeout) -> bytes | None`` (b"" at the end, None on timeout) and ``close()`` —
    libvirt's channel stream (`vmctl.backend.saved.ChannelStream`) in vmctl."""

    def __init__(self, transport, vm: str):
        self.vm = vm
        self.transport = transport
        self.buf = b""

    def send(self, *lines: str) -> None:
        self.transport.sendall("".join(f"{line}\n" for line in lines).encode())

    def expect(self, word: str, timeout: float) -> None:
        """Wait until the guest says ``vmctl-agent: <word>``; GuestNotReady on an error line, a
        closed channel, too much noise or the deadline."""
        deadline = time.monotonic() + timeout
        for _ in range(MAX_LINES):
            line = self._line(deadline)
            if not line.startswith(PREFIX):
                continue
            said = line[len(PREFIX):]
            if said == word:
                return
            if said.startswith("error"):
                raise GuestNotReady(f"{self.vm}: the guest agent refused its identity: {said[:80]!r}")
        raise GuestNotReady(f"{self.vm}: the guest agent did not say {word!r}")

    def _line(self, deadline: float) -> str:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestNotReady(f"{self.vm}: no answer from the guest agent")
            if len(self.buf) > MAX_LINE:
                raise GuestNotReady(f"{self.vm}: the guest agent sent an overlong line")
            data = self.transport.recv(MAX_LINE, left)
            if data is None:
                continue
            if not data:
                raise GuestNotReady(f"{self.vm}: the guest agent's channel closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("ascii", "replace").strip("\r")

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
