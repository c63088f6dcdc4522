"""The one-line errors for starts that the host's setup refuses (swtpm's local CA, memlock)."""

import os

from vmctl.backend.start_hints import swtpm_cause, swtpm_hint

# Shape of swtpm_setup's log when libvirt's swtpm_user cannot take the local CA's lock (seen on
# this project's CI machine after swtpm once ran there as root).
FAILED = """\
Starting vTPM manufacturing as tss:tss @ Tue 01 Dec 2026 01:20:34 PM UTC
Successfully created RSA 2048 EK with handle 0x81010001.
Successfully authored TPM state.
Ending vTPM manufacturing @ Tue 01 Dec 2026 01:20:35 PM UTC
Starting vTPM manufacturing as tss:tss @ Tue 01 Dec 2026 02:49:28 PM UTC
Successfully created RSA 2048 EK with handle 0x81010001.
  Invoking /usr/bin/swtpm_localca --type ek --ek c07b --dir /tmp/swtpm_setup.certs.96UDZ3 --tpm2
Need read/write rights on /var/lib/swtpm-localca/.lock.swtpm-localca for user tss.
swtpm_localca exit with status 1:
An error occurred. Authoring the TPM state failed.
Ending vTPM manufacturing @ Tue 01 Dec 2026 02:49:29 PM UTC
"""


def _libvirt_message(log):
    return (f"internal error: Could not run '/usr/bin/swtpm_setup'. exitstatus: 1; "
            f"Check error log '{log}' for details.")


def test_the_cause_is_read_from_the_last_attempt_only():
    assert swtpm_cause(FAILED) == ("Need read/write rights on /var/lib/swtpm-localca/.lock.swtpm-localca "
                                   "for user tss.")
    ok_then = FAILED.rsplit("Starting vTPM", 1)[0]
    assert swtpm_cause(ok_then + "Starting vTPM manufacturing as tss\nSuccessfully authored TPM state.\n") is None


def test_a_failed_swtpm_setup_becomes_one_line_with_the_cause_and_the_fix(tmp_path):
    log = tmp_path / "vm-swtpm.log"
    log.write_text("x" * 100_000 + "\n" + FAILED)   # only the log's tail is read
    text = swtpm_hint("vm", _libvirt_message(log))
    assert "\n" not in text
    assert text.startswith("start vm: the vTPM's setup (swtpm_setup) failed: Need read/write rights")
    assert "chown -R tss:root /var/lib/swtpm-localca" in text


def test_an_unreadable_or_linked_log_still_names_the_log(tmp_path):
    real = tmp_path / "real.log"
    real.write_text(FAILED)
    link = tmp_path / "link.log"
    os.symlink(real, link)
    assert swtpm_hint("vm", _libvirt_message(link)) == f"start vm: the vTPM's setup (swtpm_setup) failed; see {link}"
    missing = tmp_path / "missing.log"
    assert swtpm_hint("vm", _libvirt_message(missing)).endswith(f"see {missing}")


def test_other_failures_are_not_swtpm_ones():
    assert swtpm_hint("vm", "internal error: process exited while connecting to monitor") is None
