"""Plumbing for paramiko channels: command quoting, file-like wrappers, output pumps."""

from __future__ import annotations

import io
import shlex
import threading
import time
from typing import Callable

import paramiko

from vmctl.errors import UsageError

CHUNK = 64 * 1024


def command_text(argv: list[str] | tuple[str, ...] | str) -> str:
    if isinstance(argv, str):
        if not argv.strip():
            raise UsageError("empty command")
        return argv
    argv = list(argv)
    if not argv:
        raise UsageError("empty command")
    return shlex.join(argv)



class ChannelWriter(io.RawIOBase):
    def __init__(self, chan: paramiko.Channel):
        self.chan = chan

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.chan.sendall(bytes(b))
        return len(b)


class ChannelReader(io.RawIOBase):
    def __init__(self, chan: paramiko.Channel):
        self.chan = chan

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.chan.recv(len(b))
        b[: len(data)] = data
        return len(data)


def drain(read: Callable[[int], bytes], sink: Callable[[bytes], None] | None) -> threading.Thread:
    def loop() -> None:
        while True:
            data = read(CHUNK)
            if not data:
                return
            if sink is not None:
                sink(data)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    return th


def settle(chan: paramiko.Channel, timeout: float = 2.0) -> None:
    """Close a channel after the server closed its side (bounded wait).

    Closing first while the remote process is still exiting races in dropbear: the next channel
    opened on the connection is sometimes refused or closed at once ("Unable to open channel").
    """
    deadline = time.monotonic() + timeout
    while not chan.closed and time.monotonic() < deadline:
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            break
        time.sleep(0.005)
    chan.close()


class CappedBuffer:
    """Keeps the last bytes of a stream (remote stderr for error messages)."""

    def __init__(self, limit: int = 16384):
        self.limit = limit
        self.data = b""

    def __call__(self, chunk: bytes) -> None:
        self.data = (self.data + chunk)[-self.limit :]

    def text(self) -> str:
        return " ".join(self.data.decode("utf-8", "replace").split())
