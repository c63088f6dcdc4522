"""What a cloud image's SSH server answers, over real SSH servers on 127.0.0.1 standing for guests.

- root refused the way cloud-init's ``disable_root`` does it (OpenSSH with the ``command=`` entry
  cloud-init writes into root's authorized_keys): the wait names the user the image asks for;
- a guest whose ``cloud-init status`` lies (dropbear with a login shell that answers with megabytes
  of escape sequences, a fake status and malformed result.json): bounded, cleaned, one line.
"""

from __future__ import annotations

import resource

import pytest

from tests.figures import record
from tests.guest.conftest import start_dropbear, start_openssh
from vmctl.errors import GuestNotReady
from vmctl.guest.cloudinit import parse_errors, status_of, wait_cloud_init
from vmctl.guest.diagnose import console_findings, root_refused
from vmctl.guest.ready import wait_ready
from vmctl.guest.ssh import GuestSession

pytestmark = pytest.mark.contract

# cloud-init 22.4's disable_root entry (cc_ssh: DISABLE_USER_OPTS with $USER/$DISABLE_USER filled in)
CLOUD_INIT_DISABLE_ROOT = (
    'no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command="echo \'Please login as the user '
    '\\"kestrel\\" rather than the user \\"root\\".\';echo;sleep 10;exit 142" ')


def test_root_refused_by_cloud_init_names_the_user_to_log_in_as(tmp_path, client_key):
    srv = start_openssh(tmp_path, CLOUD_INIT_DISABLE_ROOT + client_key.public_line)
    try:
        with pytest.raises(GuestNotReady) as info:
            wait_ready(lambda: (srv.host, srv.port), user="root", client_key=client_key,
                       host_key_line=srv.host_key_line, timeout=4)
    finally:
        srv.stop()
    msg = str(info.value)
    assert "refuses root logins and asks for user 'kestrel'" in msg and "\n" not in msg


@pytest.fixture(scope="module")
def lying_guest(tmp_path_factory, client_key):
    base = tmp_path_factory.mktemp("lying-cloud-init")
    shell = base / "shell"
    # 8 MiB of terminal escapes before a status line, then a result.json that is not one
    shell.write_text("#!/bin/sh\n"
                     'case "$2" in\n'
                     "  *'cloud-init status'*) head -c 8388608 /dev/zero | tr '\\0' '\\033'; "
                     "printf '\\nstatus: error\\033[2J\\n'; exit 1 ;;\n"
                     "  *result.json*) printf '{\"v1\": {\"errors\": [\"\\033]0;pwned\\007bad\", 7, "
                     "{\"x\": 1}]}}' ; head -c 8388608 /dev/zero ;;\n"
                     '  *) exec /bin/sh "$@" ;;\n'
                     "esac\n")
    shell.chmod(0o755)
    srv = start_dropbear(base, client_key.public_line, login_shell=str(shell))
    yield srv
    srv.stop()


def test_a_lying_cloud_init_answer_is_bounded_and_cleaned(lying_guest, client_key):
    srv = lying_guest
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with GuestSession(srv.host, srv.port, user=srv.user, client_key=client_key,
                      host_key_line=srv.host_key_line) as guest:
        with pytest.raises(GuestNotReady) as info:
            wait_cloud_init(guest, "liar", 30)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    record("peak memory growth reading a lying cloud-init answer (MiB)", round(grown, 1))
    msg = str(info.value)
    assert "\x1b" not in msg and "\x07" not in msg and "\n" not in msg and len(msg) < 600
    assert grown < 32


def test_cloud_init_status_and_errors_parsing():
    assert status_of("status: done\n") == "done"
    assert status_of("noise\nstatus: error\ntime: x\n") == "error"
    assert status_of("nothing") is None
    assert parse_errors('{"v1": {"errors": ["a", "b"]}}') == ["a", "b"]
    for bad in ("", "[]", '{"v1": 3}', '{"v1": {"errors": "x"}}', "{" * 10000):
        assert parse_errors(bad) == []


def test_console_findings_name_what_any_distribution_prints():
    text = ("[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
            "cloud-init[512]: 2026-12-01 ERROR: failed to render network config\n"
            "No DHCPOFFERS received.\n")
    found = console_findings(text)
    assert any(f.startswith("kernel panic: Kernel panic") for f in found)
    assert any(f.startswith("cloud-init error:") for f in found)
    assert any(f.startswith("no DHCP lease:") for f in found)
    assert console_findings("an ordinary boot\nlogin:\n") == []
    assert root_refused('Please login as the user "debian" rather than the user "root".') == "debian"
