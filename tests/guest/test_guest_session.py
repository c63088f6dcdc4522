"""GuestSession against real servers: exec, copies (SFTP and the exec fallback), interactive, ssh(1)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from vmctl.errors import ExternalToolError, NotFoundError
from vmctl.guest.keys import new_ed25519_keypair
from vmctl.guest.openssh import ssh_command_line
from vmctl.guest.ssh import GuestSession

from tests.guest.copyhelpers import snapshot

pytestmark = pytest.mark.contract


def session(server, client_key, **kw) -> GuestSession:
    return GuestSession(server.host, server.port, user=server.user, client_key=client_key,
                        host_key_line=server.host_key_line, **kw)


# --- exec ----------------------------------------------------------------------------------


def test_exec_status_and_separate_binary_streams(server, client_key):
    data = os.urandom(300_000) + bytes(range(256))
    with session(server, client_key) as s:
        out, err = io.BytesIO(), io.BytesIO()
        status = s.run(["sh", "-c", r"cat; printf 'e\000\377rr' >&2; exit 7"], stdin=data, stdout=out, stderr=err)
        assert status == 7
        assert out.getvalue() == data
        assert err.getvalue() == b"e\x00\xffrr"
        # stdin from a file object
        status, o, e = s.output(["sh", "-c", "cat >&2"], stdin=None)
        assert (status, o, e) == (0, b"", b"")
        out = io.BytesIO()
        assert s.run(["cat"], stdin=io.BytesIO(data), stdout=out, stderr=io.BytesIO()) == 0
        assert out.getvalue() == data


def test_exec_quotes_argv_for_the_remote_shell(server, client_key):
    with session(server, client_key) as s:
        status, out, _ = s.output(["printf", "%s|", "a b", "c'd", "$HOME", "; false", "*"])
        assert status == 0
        assert out == b"a b|c'd|$HOME|; false|*|"
        # a string is shell text
        assert s.output("echo $((6*7))")[1] == b"42\n"
        # killed by a signal: 255, like ssh(1)
        assert s.run("kill -9 $$", stdout=io.BytesIO(), stderr=io.BytesIO()) == 255


def test_exec_streams_output_as_it_comes(server, client_key):
    class Stamped(io.RawIOBase):
        def __init__(self):
            self.chunks = []

        def write(self, b):
            self.chunks.append((time.monotonic(), bytes(b)))
            return len(b)

    out = Stamped()
    with session(server, client_key) as s:
        start = time.monotonic()
        assert s.run(["sh", "-c", "echo first; sleep 1; echo second"], stdout=out, stderr=io.BytesIO()) == 0
    first_at = next(t for t, c in out.chunks if b"first" in c)
    assert first_at - start < 0.8
    assert b"".join(c for _, c in out.chunks) == b"first\nsecond\n"


# --- copies ------------------------------------------------------------------------------

COPY_MODES = [("dropbear", None), ("openssh", None), ("openssh", False)]


@pytest.fixture(params=COPY_MODES, ids=["dropbear-exec", "openssh-sftp", "openssh-exec"])
def copier(request, client_key, tmp_path):
    kind, sftp = request.param
    server = request.getfixturevalue(kind)
    remote_dir = tmp_path / "remote"  # same machine: the "guest" path is a host path
    remote_dir.mkdir()
    with session(server, client_key, sftp=sftp) as s:
        expected_sftp = kind == "openssh" and sftp is None
        assert (s.sftp() is not None) == expected_sftp
        yield s, remote_dir


def test_file_round_trip_5mib(copier, tmp_path):
    s, remote = copier
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024 + 17))
    os.chmod(src, 0o640)
    written = s.put(src, str(remote / "copy.bin"))
    assert written == str(remote / "copy.bin")
    assert (remote / "copy.bin").read_bytes() == src.read_bytes()
    assert stat.S_IMODE((remote / "copy.bin").stat().st_mode) == 0o640
    back_dir = tmp_path / "back"
    back_dir.mkdir()
    got = s.get(str(remote / "copy.bin"), back_dir)  # an existing directory receives it by name
    assert got == back_dir / "copy.bin"
    assert got.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(got.stat().st_mode) == 0o640
    # explicit mode, and into an existing remote directory
    s.put(src, str(remote) + "/", mode=0o600)
    assert stat.S_IMODE((remote / "big.bin").stat().st_mode) == 0o600
    assert not list(back_dir.glob(".*part"))


def _make_tree(src: Path) -> None:
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.txt").write_text("hello\n")
    (src / "bin.dat").write_bytes(os.urandom(200_000))
    (src / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "sub" / "deeper" / "secret").write_bytes(b"\x00\x01s3cret")
    (src / "name with spaces & 'quotes'").write_text("odd")
    (src / "-dash").write_text("dash")
    os.symlink("a.txt", src / "link-to-a")
    os.chmod(src / "a.txt", 0o644)
    os.chmod(src / "sub" / "run.sh", 0o755)
    os.chmod(src / "sub" / "deeper" / "secret", 0o600)
    os.chmod(src / "sub" / "deeper", 0o700)
    os.chmod(src / "empty", 0o751)
    os.chmod(src, 0o750)


def test_directory_round_trip(copier, tmp_path):
    s, remote = copier
    src = tmp_path / "src"
    src.mkdir()
    _make_tree(src)
    written = s.put(src, str(remote / "dst"))  # missing destination: created with src's contents
    assert written == str(remote / "dst")
    assert snapshot(remote / "dst") == snapshot(src)
    assert stat.S_IMODE((remote / "dst").stat().st_mode) == 0o750
    back = tmp_path / "back"
    got = s.get(str(remote / "dst"), back)
    assert got == back
    assert snapshot(back) == snapshot(src)
    assert stat.S_IMODE(back.stat().st_mode) == 0o750
    # an existing directory receives the source under its own name
    s.put(src, str(remote / "dst"))
    assert snapshot(remote / "dst" / "src") == snapshot(src)


def test_copy_failures_are_loud(copier, tmp_path):
    s, remote = copier
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises((ExternalToolError, NotFoundError)):
        s.put(src, str(remote / "no-such-dir" / "f"))
    with pytest.raises(NotFoundError):
        s.get(str(remote / "missing"), tmp_path / "out")
    with pytest.raises(NotFoundError):
        s.put(tmp_path / "missing", str(remote / "x"))
    assert not (tmp_path / "out").exists()


def test_exec_fallback_reports_remote_failure(dropbear, client_key, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(os.urandom(1 << 20))
    unwritable = tmp_path / "ro"
    unwritable.mkdir()
    (unwritable / "f").mkdir()  # writing a file over a directory fails on the remote side
    with session(dropbear, client_key) as s:
        with pytest.raises(ExternalToolError) as info:
            s._put_file(src, str(unwritable / "f"), 0o644)
        assert "exit" in str(info.value)


def test_session_errors_name_the_step(dropbear, client_key):
    from vmctl.errors import GuestNotReady

    with pytest.raises(GuestNotReady) as info:
        GuestSession("127.0.0.1", 1, user="root", client_key=client_key,
                     host_key_line=dropbear.host_key_line, connect_timeout=1).open()
    assert info.value.step == "tcp"
    with session(dropbear, client_key, sftp=True) as s, pytest.raises(ExternalToolError) as info:
        s.put(__file__, "/tmp/never-written")
    assert "offers no SFTP" in str(info.value)


# --- interactive and ssh(1) ------------------------------------------------------------------


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class _PtyUser:
    """Runs session.interactive() on a pty in a thread; the test types into the master side."""

    def __init__(self, s, command=None):
        import threading

        self.master, self.slave = os.openpty()
        _set_winsize(self.slave, 33, 111)
        self.out = b""
        self.status = None
        self.thread = threading.Thread(target=self._run, args=(s, command), daemon=True)

    def _run(self, s, command):
        self.status = s.interactive(command, stdin_fd=self.slave, stdout_fd=self.slave)

    def read_until(self, needle: bytes, timeout: float = 10) -> bytes:
        import select

        deadline = time.monotonic() + timeout
        while needle not in self.out and time.monotonic() < deadline:
            r, _, _ = select.select([self.master], [], [], 0.1)
            if r:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:
                    break
        return self.out

    def close(self):
        os.close(self.master)
        os.close(self.slave)


def test_interactive_shell_with_a_pty(server, client_key):
    import termios

    with session(server, client_key) as s:
        user = _PtyUser(s)
        try:
            before = termios.tcgetattr(user.slave)
            user.thread.start()
            user.read_until(b"#")  # the prompt: the shell is reading now
            os.write(user.master, b"stty size; echo hi-$((1+2)); exit 5\r")
            user.read_until(b"hi-3")
            user.thread.join(10)
            assert not user.thread.is_alive()
            assert user.status == 5
            assert b"33 111" in user.out  # the pty has the terminal's size
            assert termios.tcgetattr(user.slave) == before  # terminal mode restored
        finally:
            user.close()


def test_interactive_command_with_a_pty(server, client_key):
    with session(server, client_key) as s:
        user = _PtyUser(s, ["sh", "-c", "stty size; read x; echo got-$x; exit 6"])
        try:
            user.thread.start()
            user.read_until(b"33 111")
            os.write(user.master, b"typed\r")
            user.read_until(b"got-typed")
            user.thread.join(10)
            assert user.status == 6
            assert b"got-typed" in user.out
        finally:
            user.close()


def test_interactive_command_without_terminal(server, client_key, tmp_path):
    r, w = os.pipe()
    out = tmp_path / "out"
    os.close(w)  # stdin at EOF
    with open(out, "wb") as fh, session(server, client_key) as s:
        status = s.interactive(["sh", "-c", "echo via-pipe; echo err >&2; exit 4"], stdin_fd=r, stdout_fd=fh.fileno())
    os.close(r)
    assert status == 4
    assert out.read_bytes().split() == [b"via-pipe", b"err"] or b"via-pipe" in out.read_bytes()


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_ssh_command_line_works_with_real_ssh_and_pins(server, client_key, tmp_path):
    kh = tmp_path / "known_hosts"
    argv = ssh_command_line(server.host, server.port, server.user, client_key.path, server.host_key_line,
                            known_hosts=kh, command=["echo", "pinned ok"], tty=False)
    assert "StrictHostKeyChecking=yes" in argv
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # no ~/.ssh of the real user
    proc = subprocess.run(argv, capture_output=True, timeout=20, stdin=subprocess.DEVNULL, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"pinned ok\n"
    _, other = new_ed25519_keypair()
    argv = ssh_command_line(server.host, server.port, server.user, client_key.path, other,
                            command="echo should-not-run", tty=False)
    temp_known_hosts = Path(next(a for a in argv if a.startswith("UserKnownHostsFile=")).split("=", 1)[1])
    try:
        assert stat.S_IMODE(temp_known_hosts.stat().st_mode) == 0o600
        proc = subprocess.run(argv, capture_output=True, timeout=20, stdin=subprocess.DEVNULL, env=env)
    finally:
        temp_known_hosts.unlink()
    assert proc.returncode == 255
    assert b"should-not-run" not in proc.stdout
    assert b"HOST IDENTIFICATION HAS CHANGED" in proc.stderr or b"Host key verification failed" in proc.stderr


def test_put_never_follows_a_link_inside_the_tree(copier, tmp_path):
    """Host → guest: a link inside the source tree travels as a link; what it points at (here the
    host's /etc) is never read or sent. Only the path the user named is followed."""
    s, remote = copier
    src = tmp_path / "tree"
    src.mkdir()
    (src / "f").write_text("mine")
    os.symlink("/etc", src / "etc-dir")
    os.symlink("/etc/hostname", src / "etc-file")
    named = tmp_path / "named-link"
    os.symlink(src, named)
    s.put(named, str(remote / "copy"))
    got = remote / "copy"
    assert sorted(p.name for p in got.iterdir()) == ["etc-dir", "etc-file", "f"]
    assert os.readlink(got / "etc-dir") == "/etc" and os.readlink(got / "etc-file") == "/etc/hostname"
    assert (got / "f").read_text() == "mine"
