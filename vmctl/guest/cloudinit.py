"""``--wait cloud-init``: until the guest's own cloud-init says it has finished, its errors reported.

Asked over the SSH session vmctl already trusts (pinned host key), with the distribution's own
``cloud-init status --wait --long`` under ``timeout`` so the guest cannot hold vmctl past its
deadline, then cloud-init's ``/run/cloud-init/result.json`` for the errors. The guest controls every
byte of both answers: each is read up to a bound, parsed defensively, and only printable text of
bounded length reaches a message.
"""

from __future__ import annotations

import json
import re

from vmctl.errors import GuestNotReady

MAX_ANSWER = 64 << 10
MAX_ERRORS = 5
_STATUS = re.compile(r"^status:\s*(\S[^\n]*)$", re.M)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


class _Capped:
    """A binary sink keeping the first `limit` bytes and counting the rest away."""

    def __init__(self, limit: int = MAX_ANSWER):
        self.limit = limit
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", "replace")


def clean(text: str, limit: int = 200) -> str:
    """Guest text made safe for one terminal line: printable ASCII, spaces folded, bounded."""
    text = " ".join(_UNPRINTABLE.sub(" ", text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_errors(result_json: str) -> list[str]:
    """cloud-init's ``v1.errors`` from result.json, cleaned (anything malformed: none)."""
    try:
        data = json.loads(result_json)
    except ValueError:
        return []
    errors = data.get("v1", {}).get("errors") if isinstance(data, dict) and isinstance(data.get("v1"), dict) else None
    if not isinstance(errors, list):
        return []
    return [clean(str(e)) for e in errors[:MAX_ERRORS]]


def status_of(answer: str) -> str | None:
    """The ``status:`` value in ``cloud-init status`` output (None if there is none)."""
    found = _STATUS.search(answer)
    return clean(found.group(1), 40) if found else None


def wait_cloud_init(guest, name: str, timeout: float) -> str:
    """Block until cloud-init in `guest` (an open `GuestSession`) has finished; return its status
    (``done``). Raise `GuestNotReady` naming what the guest said when it failed, has no
    cloud-init, or was not done in `timeout` seconds."""
    seconds = max(1, int(timeout))
    out, err = _Capped(), _Capped()
    status = guest.run(["timeout", str(seconds), "cloud-init", "status", "--wait", "--long"],
                       stdout=out, stderr=err)
    answer = out.text()
    state = status_of(answer)
    if status == 127 or (state is None and "not found" in err.text()):
        raise _error(name, "--wait cloud-init: the image has no cloud-init command", "cloud-init")
    if status == 124:
        raise _error(name, f"cloud-init had not finished after {seconds} s (status: {state or 'unknown'})",
                     "cloud-init")
    if state == "done" and status == 0:
        return state
    result = _Capped()
    guest.run(["cat", "/run/cloud-init/result.json"], stdout=result, stderr=_Capped(1024))
    errors = parse_errors(result.text())
    what = "; ".join(errors) if errors else clean(answer.replace("\n", " ; "), 300) or f"exit status {status}"
    raise _error(name, f"cloud-init finished with status '{state or 'unknown'}': {what}", "cloud-init")


def _error(name: str, message: str, step: str) -> GuestNotReady:
    err = GuestNotReady(f"{name}: {message}")
    err.step = step
    err.reason = message
    err.details = ""
    return err
