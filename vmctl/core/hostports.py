"""Free TCP ports on 127.0.0.1 for forwarded guest ports (hosted mode)."""

from __future__ import annotations

import socket

from vmctl.errors import ResourceError


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port right now (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_port(taken: set[int] = frozenset(), host: str = "127.0.0.1") -> int:
    """Return a port the kernel considers free and no other vmctl instance has reserved."""
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port
    raise ResourceError("no free TCP port on 127.0.0.1 for the SSH forward")
