"""Progress: rich rows on a terminal (a real pty), one plain line per finished transfer
otherwise, nothing with --json or -q."""

import io
import os
import pty
import select
import subprocess
import sys

from vmctl.cli.progress_view import ProgressView


def test_not_a_terminal_one_line_per_finished_transfer_and_no_phases():
    out = io.StringIO()
    view = ProgressView(out, terminal=False)
    view.phase("web1: creating the disk", None)
    for done in (0, 1 << 20, 4 << 20):
        view.transfer("download sha256:1234abcd", done, 4 << 20)
    view.transfer("download sha256:1234abcd", 4 << 20, 4 << 20)   # reported twice: one line
    view.transfer("upload sha256:ffff0000", 10, 0)                 # unknown size: no line
    view.transfer("load", 10, None)
    view.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("download sha256:1234abcd: 4.0 MiB in ")
    assert lines[0].endswith("/s)")


def test_a_terminal_gets_one_row_per_transfer_with_size_and_speed():
    out = io.StringIO()
    view = ProgressView(out, terminal=True)
    view.phase("pull: resolving", None)
    for done in range(0, 9 << 20, 1 << 20):
        view.transfer("download sha256:aaaa", done, 8 << 20)
        view.transfer("download sha256:bbbb", done // 2, 8 << 20)
    view.say("aaaa: blob from mirror")
    view.close()
    text = out.getvalue()
    assert "download sha256:aaaa" in text and "download sha256:bbbb" in text
    assert "8.0 MiB/8.0 MiB" in text and "aaaa: blob from mirror" in text


def _run_in_pty(argv, env):
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_image_import_draws_rows_on_a_terminal_and_lines_in_scripts(tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    env = {**os.environ, "VMCTL_ROOT": str(tmp_path / "root"), "VMCTL_CONFIG": "/dev/null",
           "COLUMNS": "120", "TERM": "xterm"}
    code, text = _run_in_pty([sys.executable, "-m", "vmctl", "image", "import", str(disk), "a:1"], env)
    assert code == 0, text
    assert "check" in text and "publish" in text and "\x1b[" in text   # rich's rows on the terminal
    plain = subprocess.run([sys.executable, "-m", "vmctl", "image", "import", str(disk), "b:1"],
                           env=env, capture_output=True, text=True)
    assert plain.returncode == 0 and "\x1b[" not in plain.stderr
    assert all(": " in line and " in " in line for line in plain.stderr.splitlines()), plain.stderr
    quiet = subprocess.run([sys.executable, "-m", "vmctl", "-q", "image", "import", str(disk), "c:1"],
                           env=env, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
