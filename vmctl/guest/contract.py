"""What a vmctl-built guest prints on its serial console, for the host to parse.

The guest's init scripts (``templates/guest/``, written by ``vmctl.build``) print exactly these
strings; readiness (`vmctl.guest.ready`) reads them to notice the guest early and to compare the
SSH host key fingerprints, printed in the shape cloud-init prints them (``ssh-keygen -l`` lines
between the markers).
"""

from __future__ import annotations

import re

#: Printed once the guest has applied its seed, has an address and its SSH server listens.
READY_LINE = "vmctl-guest: ready"
#: Printed just before READY_LINE: ``vmctl-guest: up <seconds since the kernel started> s``.
UPTIME_RE = re.compile(r"^vmctl-guest: up (?P<seconds>[0-9.]+) s$")
#: Printed by the guest's shutdown script after its disk was synced and remounted read-only.
CLEAN_SHUTDOWN_LINE = "vmctl-guest: clean shutdown"
#: cloud-init's markers around the host key fingerprints (one ``ssh-keygen -l`` line each).
FINGERPRINTS_BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
FINGERPRINTS_END = "-----END SSH HOST KEY FINGERPRINTS-----"
#: One fingerprint line: ``256 SHA256:<base64 without padding> root@host (ED25519)``.
FINGERPRINT_RE = re.compile(r"^(?P<bits>\d+) (?P<fingerprint>SHA256:[A-Za-z0-9+/]+) (?P<comment>\S*) ?\((?P<type>[A-Z0-9-]+)\)$")
#: Label of the NoCloud seed volume the guest looks for.
SEED_LABEL = "cidata"


def parse_fingerprints(console_text: str) -> list[dict[str, str]]:
    """Return the fingerprints between the last BEGIN/END markers in ``console_text``.

    Each entry has ``bits``, ``fingerprint`` (``SHA256:...``), ``comment`` and ``type``
    (``ED25519``, ``RSA``, ``ECDSA``). Lines that are not fingerprints are ignored; an empty list
    means the block was not (yet) printed completely.
    """
    lines = [line.strip("\r ") for line in console_text.splitlines()]
    try:
        end = len(lines) - 1 - lines[::-1].index(FINGERPRINTS_END)
        begin = end - 1 - lines[end - 1 :: -1].index(FINGERPRINTS_BEGIN)
    except ValueError:
        return []
    found = []
    for line in lines[begin + 1 : end]:
        m = FINGERPRINT_RE.match(line)
        if m:
            found.append(m.groupdict())
    return found


def is_ready(console_text: str) -> bool:
    """True when ``console_text`` contains the readiness line on a line of its own."""
    return any(line.strip("\r ") == READY_LINE for line in console_text.splitlines())
