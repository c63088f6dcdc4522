"""One-line explanations for domain starts that libvirt refuses for reasons of the host's setup.

libvirt's own messages for these name a symptom (a failed helper, a refused rlimit) and point at a
log; the user needs the cause and the fix in one line.
"""

from __future__ import annotations

import os
import re

# A domain with <memtune><hard_limit> makes libvirt raise QEMU's RLIMIT_MEMLOCK to that limit
# before exec (qemuDomainGetMemLockLimitBytes prefers the hard limit). Raising a hard rlimit needs
# CAP_SYS_RESOURCE; a daemon without it (a container or sandbox that drops it from the bounding
# set, as on this project's CI machines where RLIMIT_MEMLOCK is capped at 8 MiB) fails every start
# of such a domain with this message. vmctl's profiles set the hard limit through
# [tuning] memory_headroom_mib / tcg_memory_headroom_mib (the "kvm" profile does).
MEMLOCK_DENIED = "cannot limit locked memory"

# libvirt runs swtpm_setup once per new vTPM; it fails when the host's swtpm local CA
# (/var/lib/swtpm-localca) is not writable by libvirt's swtpm_user (tss) -- typically because swtpm
# once ran there as another user and left its lock and serial files behind, owned by that user.
_SWTPM_LOG = re.compile(r"Could not run '[^']*swtpm_setup'.*Check error log '(/[^']+)'")
_SWTPM_CAUSE = re.compile(r"Need read/write rights|[Ee]rror|[Ff]ailed|[Cc]annot|[Pp]ermission denied")
_LOG_TAIL = 16 * 1024


def memlock_hint(name: str) -> str:
    """The one-line error for a start refused because the daemon may not raise RLIMIT_MEMLOCK."""
    return (f"start {name}: libvirtd may not raise QEMU's locked-memory limit to the domain's "
            "<memtune><hard_limit> (the daemon lacks CAP_SYS_RESOURCE); that limit comes from the "
            "profile's [tuning] memory_headroom_mib/tcg_memory_headroom_mib: use a profile that sets "
            'both to "" (e.g. one with extends = "kvm"), then recreate the VM')


def swtpm_cause(log_text: str) -> str | None:
    """The first line of the last vTPM manufacturing attempt in swtpm_setup's log that names why
    it failed, or None."""
    attempt = log_text.rsplit("Starting vTPM manufacturing", 1)[-1]
    for line in attempt.splitlines():
        line = line.strip()
        if _SWTPM_CAUSE.search(line) and "Invoking" not in line:
            return line[:300]
    return None


def _log_tail(path: str) -> str:
    """The last bytes of a host log file (never a link, a FIFO or a device), '' when unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not os.path.stat.S_ISREG(st.st_mode):
            return ""
        os.lseek(fd, max(0, st.st_size - _LOG_TAIL), os.SEEK_SET)
        return os.read(fd, _LOG_TAIL).decode("utf-8", "replace")
    finally:
        os.close(fd)


def swtpm_hint(name: str, message: str) -> str | None:
    """The one-line error for a start that failed in swtpm_setup (None for any other failure):
    the cause from swtpm's log, and the usual fix when it is the local CA's ownership."""
    found = _SWTPM_LOG.search(message)
    if not found:
        return None
    log = found.group(1)
    cause = swtpm_cause(_log_tail(log))
    if cause is None:
        return f"start {name}: the vTPM's setup (swtpm_setup) failed; see {log}"
    text = f"start {name}: the vTPM's setup (swtpm_setup) failed: {cause}"
    if "swtpm-localca" in cause:
        text += (" -- swtpm's local CA belongs to libvirt's swtpm_user: "
                 "chown -R tss:root /var/lib/swtpm-localca")
    return text
