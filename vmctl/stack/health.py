"""A stack VM's healthcheck: its command run in the guest (as root, over SSH) until it exits 0.

What the guest prints is the guest's: only the last 2 KiB of it is kept, for the one-line error.
"""

from __future__ import annotations

import time
from typing import Callable

from vmctl.core import reach
from vmctl.core.session import Session
from vmctl.errors import Unhealthy, VmctlError
from vmctl.stack.spec import Healthcheck


class Tail:
    """A write-only sink keeping the last `limit` bytes (a guest's answer is hostile: bounded)."""

    def __init__(self, limit: int = 2048):
        self.data, self.limit = b"", limit

    def write(self, b: bytes) -> int:
        self.data = (self.data + bytes(b))[-self.limit:]
        return len(b)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        last = self.data.decode("utf-8", "replace").strip().splitlines()
        return last[-1][:200] if last else ""


def _timeout_argv(hc: Healthcheck) -> list[str]:
    # `timeout` where the guest has it (coreutils, busybox); the command alone where it does not
    return ["sh", "-c", 'if command -v timeout >/dev/null 2>&1; then exec timeout "$0" "$@"; fi; exec "$@"',
            str(max(1, int(hc.timeout))), *hc.command]


def check_health(session: Session, name: str, hc: Healthcheck, say: Callable[[str], None]) -> None:
    """Run `hc` in the guest (as root) until it exits 0, at most `hc.retries` times."""
    if hc.start_period:
        time.sleep(hc.start_period)
    code, sink = None, Tail()
    for attempt in range(1, hc.retries + 1):
        sink = Tail()
        try:
            code = reach.exec_(session, name, _timeout_argv(hc), stdout=sink, stderr=sink, root=True)
        except VmctlError as exc:   # SSH not (yet) answering counts as a failed check
            code, sink.data = -1, str(exc).encode()
        if code == 0:
            return
        if attempt == 1 or attempt % 10 == 0:
            say(f"{name}: healthcheck {attempt}/{hc.retries} exited {code}")
        time.sleep(hc.interval)
    raise Unhealthy(f"{name} is unhealthy: its healthcheck failed {hc.retries} times (last exit status "
                    f"{code}: {sink.text() or 'no output'})")
