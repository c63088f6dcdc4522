"""Real SSH servers on 127.0.0.1 for the guest room's tests, started and stopped by the fixtures.

- ``dropbear`` (Debian ``dropbear-bin``), like vmctl's tiny guest: it has no SFTP server. It logs
  in as root and reads root's ``~/.ssh/authorized_keys`` from passwd, so it runs in a private mount
  namespace (``unshare -m``) where a copy of /etc/passwd with root's home set to a temp dir is
  bind-mounted over /etc/passwd; the real /root/.ssh is never touched. OpenSSH's sftp-server is
  hidden there too (dropbear would otherwise find ``/usr/lib/sftp-server`` on this host), so the
  exec fallback is what gets tested. When Debian's ``busybox`` is installed, ``/usr/bin`` in that
  namespace holds only busybox applets, so the remote commands vmctl sends meet the same userland
  as on the tiny guest (busybox sh, cat, tar, stat).
- ``openssh`` (Debian ``openssh-server``): ``sshd -D -f <temp config>`` with ``AuthorizedKeysFile``
  in a temp dir and the SFTP subsystem, like a cloud image.

Both need root (mount namespaces, sshd's privilege separation); without it, or without the
binaries, the tests that need them are skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmctl.guest.keys import ensure_client_key, new_ed25519_keypair
from vmctl.guest.handshake import StepFailed, tcp_connect, wait_banner

DROPBEAR = shutil.which("dropbear") or "/usr/sbin/dropbear"
DROPBEARKEY = shutil.which("dropbearkey") or "/usr/bin/dropbearkey"
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    kind: str
    host: str
    port: int
    user: str
    host_key_line: str
    has_sftp: bool
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_listening(server: Server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.kind} exited ({server.proc.returncode}): {server.log.read_text()[-2000:]}")
        try:
            sock = tcp_connect(server.host, server.port, 0.5)
            try:
                wait_banner(sock, 1.0)
                return
            finally:
                sock.close()
        except StepFailed:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{server.kind} did not listen on {server.port}: {server.log.read_text()[-2000:]}")


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the SSH server fixtures need root (mount namespace, sshd privilege separation)")


@pytest.fixture(scope="session")
def client_key(tmp_path_factory):
    return ensure_client_key(tmp_path_factory.mktemp("store") / "keys")


def start_dropbear(base: Path, authorized_line: str, *, login_shell: str = "/bin/sh") -> Server:
    _need_root()
    if not (os.path.exists(DROPBEAR) and os.path.exists(DROPBEARKEY) and shutil.which("unshare")):
        pytest.skip("dropbear (dropbear-bin) or unshare is not installed")
    home = base / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    os.chmod(home, 0o700)
    auth = home / ".ssh" / "authorized_keys"
    auth.write_text(authorized_line + "\n")
    os.chmod(auth, 0o600)
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] == "root":
            fields[5] = str(home)
            fields[6] = login_shell
            line = ":".join(fields)
        lines.append(line)
    passwd = base / "passwd"
    passwd.write_text("\n".join(lines) + "\n")
    os.chmod(passwd, 0o644)
    hostkey = base / "dropbear_ed25519_host_key"
    subprocess.run([DROPBEARKEY, "-t", "ed25519", "-f", str(hostkey)], check=True, capture_output=True)
    out = subprocess.run([DROPBEARKEY, "-y", "-f", str(hostkey)], check=True, capture_output=True, text=True).stdout
    host_line = next(l for l in out.splitlines() if l.startswith("ssh-"))
    host_line = " ".join(host_line.split()[:2])
    port = free_port()
    hide_sftp = f"mount --bind /dev/null {SFTP_SERVER} && " if os.path.exists(SFTP_SERVER) else ""
    userland = ""
    busybox = shutil.which("busybox")
    if busybox:
        # the tiny guest's userland: only busybox applets on /usr/bin (and /bin, merged-usr)
        bindir = base / "busybox-bin"
        bindir.mkdir()
        shutil.copy2(busybox, bindir / "busybox")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                os.symlink("busybox", bindir / applet)
        userland = f"mount --bind {bindir} /usr/bin && "
    shells = ""
    if login_shell != "/bin/sh":  # dropbear refuses a login shell that /etc/shells does not list
        shells_file = base / "shells"
        shells_file.write_text(Path("/etc/shells").read_text() + login_shell + "\n")
        shells = f"mount --bind {shells_file} /etc/shells && "
    script = (f'mount --bind "$1" /etc/passwd && {shells}{hide_sftp}{userland}'
              f'exec {DROPBEAR} -F -E -s -p 127.0.0.1:{port} -r "$2"')
    log = base / "dropbear.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(passwd), str(hostkey)],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    server = Server("dropbear", "127.0.0.1", port, "root", host_line, False, proc, log)
    _wait_listening(server)
    return server


def start_openssh(base: Path, authorized_line: str, *, sftp_server: str = SFTP_SERVER) -> Server:
    _need_root()
    if not (os.path.exists(SSHD) and os.path.exists(SFTP_SERVER)):
        pytest.skip("OpenSSH server is not installed (apt-get install openssh-server)")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    private, host_line = new_ed25519_keypair(comment="")
    hostkey = base / "ssh_host_ed25519_key"
    fd = os.open(hostkey, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    auth = base / "authorized_keys"
    auth.write_text(authorized_line + "\n")
    os.chmod(auth, 0o600)
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        f"""ListenAddress 127.0.0.1:{port}
HostKey {hostkey}
PidFile none
UsePAM no
StrictModes no
AuthorizedKeysFile {auth}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
Subsystem sftp {sftp_server}
LogLevel VERBOSE
"""
    )
    log = base / "sshd.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = Server("openssh", "127.0.0.1", port, "root", host_line, True, proc, log)
    _wait_listening(server)
    return server


STARTERS = {"dropbear": start_dropbear, "openssh": start_openssh}


@pytest.fixture(scope="module", params=["dropbear", "openssh"])
def server(request, tmp_path_factory, client_key):
    srv = STARTERS[request.param](tmp_path_factory.mktemp(request.param), client_key.public_line)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def dropbear(tmp_path_factory, client_key):
    srv = start_dropbear(tmp_path_factory.mktemp("dropbear"), client_key.public_line)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def openssh(tmp_path_factory, client_key):
    srv = start_openssh(tmp_path_factory.mktemp("openssh"), client_key.public_line)
    yield srv
    srv.stop()
