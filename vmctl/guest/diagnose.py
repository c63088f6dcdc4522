"""Why a guest is not ready, in words: from what its SSH server answered and its serial console.

Nothing here depends on vmctl's own guest: the patterns are those of the Linux kernel, firmware
(SeaBIOS, OVMF), GRUB, dhclient/systemd-networkd, cloud-init and OpenSSH, as any distribution
prints them. The serial log is the guest's own output (hostile): it is read up to a bound by
`vmctl.guest.serial`, and only cleaned, bounded excerpts of matching lines are quoted.
"""

from __future__ import annotations

import re

from vmctl.guest.cloudinit import clean

# cloud-init's disable_root: root's authorized_keys entry prints this and exits 142.
_ROOT_REFUSED = re.compile(r'Please login as the user "?([A-Za-z0-9_.-]{1,32})"? rather than the user "?root"?')

# (what it means, pattern): the first line matching, newest first, is quoted.
_CONSOLE = (
    ("kernel panic", re.compile(r"Kernel panic - not syncing.*")),
    ("no bootable disk", re.compile(r"No bootable device.*|No bootable option or device was found.*|"
                                    r"BdsDxe: failed to load Boot\S+.*")),
    ("bootloader error", re.compile(r"^error: .*(no such|not found|unknown filesystem|invalid).*", re.I | re.M)),
    ("no root filesystem", re.compile(r"(Gave up waiting for root file system device.*|ALERT! .* does not exist.*|"
                                      r"VFS: Unable to mount root fs.*)")),
    ("no DHCP lease", re.compile(r"(No DHCPOFFERS received.*|DHCPDISCOVER .* no free leases.*|"
                                 r"Failed to start .*(networking|ifup|Raise network).*|"
                                 r"DHCPv4 client: .*(timeout|failed).*)", re.I)),
    ("cloud-init error", re.compile(r"(cloud-init\[\d+\]: .*(ERROR|Traceback|failed).*|"
                                    r"Failed to start .*[Cc]loud-init.*|"
                                    r"\[CLOUDINIT\].*(ERROR|WARNING).*)")),
    ("SSH server failed", re.compile(r"Failed to start .*(OpenBSD Secure Shell|ssh|sshd).*")),
)


def root_refused(answer: str) -> str | None:
    """The user an image asks for when it refuses root (cloud-init's ``disable_root``), else None."""
    found = _ROOT_REFUSED.search(answer)
    return found.group(1) if found else None


def console_findings(text: str) -> list[str]:
    """``"<meaning>: <the line>"`` for each kind of trouble the console shows (newest line of each)."""
    out = []
    for meaning, pattern in _CONSOLE:
        matches = pattern.findall(text) if pattern.groups == 0 else [m.group(0) for m in pattern.finditer(text)]
        if matches:
            out.append(f"{meaning}: {clean(matches[-1], 160)}")
    return out


def explain_auth(user: str, answer: str, status: int) -> str:
    """A reason for a login whose test command failed, from what the guest printed."""
    wanted = root_refused(answer)
    if wanted:
        return (f"the image refuses root logins and asks for user {wanted!r} (cloud-init's disable_root): "
                f"use --user {wanted}, or let vmctl make its own login user (the default)")
    said = clean(answer, 160)
    return f"logged in as {user!r}, but 'true' exited with status {status}" + (f": {said}" if said else "")
