"""stats and events on one real tiny guest under libvirtd + QEMU/TCG, through the vmctl program."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from tests.figures import record
from vmctl import errors

pytestmark = pytest.mark.e2e
NAME = "mon1"


@pytest.fixture(scope="module")
def vm(e2e_vmctl):
    """One booted VM for the whole module (a boot costs 10-20 s under TCG)."""
    e2e_vmctl("run", NAME, "--image", "tiny", "--restrict-network", "--timeout", "240")
    yield e2e_vmctl
    e2e_vmctl("rm", "-f", NAME, check=False)


class Lines:
    """The stdout lines of a running `vmctl events`, collected by a thread as they come."""

    def __init__(self, proc):
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(line) for line in list(self.lines)):
                return True
            time.sleep(0.1)
        return False

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C, as a user ends it; (exit status, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=20)
        self._thread.join(timeout=5)
        return code, self.proc.stderr.read()


def _listening(vmctl, lines: Lines, seen) -> None:
    """Pause and resume until the stream shows it: events then reach it (it started listening)."""
    for _ in range(30):
        vmctl("pause", NAME)
        vmctl("resume", NAME)
        if lines.wait_for(seen, 2):
            return
    raise AssertionError(f"vmctl events printed nothing for pause/resume: {lines.lines}")


def test_stats_shows_the_booted_vm_with_its_figures(vm):
    rows = json.loads(vm("stats", "--no-stream", "--json").stdout)
    (row,) = [r for r in rows if r["name"] == NAME]
    assert row["state"] == "running"
    assert row["cpu_percent"] > 0, row
    assert row["memory_used_bytes"] > 0 and row["memory_limit_bytes"] >= 64 << 20, row
    assert row["memory_source"] in ("guest", "host")
    assert row["block_read_bytes"] > 0, row   # the guest read its kernel modules and root file system
    record("stats: guest CPU over one second", row["cpu_percent"], how="max", unit="%")
    record("stats: guest memory used", row["memory_used_bytes"] >> 20, how="max", unit="MiB")
    record("stats: guest block reads after boot", row["block_read_bytes"] >> 10, how="max", unit="KiB")
    text = vm("stats", "--no-stream", NAME).stdout.splitlines()
    assert text[0].split()[:3] == ["NAME", "CPU", "%"] and text[1].startswith(NAME) and len(text) == 2


def test_streaming_stats_prints_frame_after_frame_until_ctrl_c(vm):
    lines = Lines(vm.popen("stats", "--json"))
    deadline = time.monotonic() + 20
    while len(lines.lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    code, err = lines.interrupt()
    frames = [json.loads(line) for line in lines.lines]
    assert len(frames) >= 2 and all(NAME in [r["name"] for r in f] for f in frames), lines.lines
    assert code == 0 and err == "", err


def test_stats_of_an_unknown_vm_is_one_line_and_not_found(vm):
    result = vm("stats", "--no-stream", "nosuchvm", check=False)
    assert result.returncode == errors.NotFoundError.exit_code
    assert result.stderr == "vmctl: error: no such VM: nosuchvm\n" and result.stdout == ""


def test_events_prints_lifecycle_lines_and_ctrl_c_exits_0(vm):
    lines = Lines(vm.popen("events"))
    _listening(vm, lines, lambda line: line.endswith(f"vm {NAME} resumed (unpaused)"))
    # the stream may have started listening between a pause and its resume: once it listens,
    # one more pause is seen for sure
    vm("pause", NAME)
    vm("resume", NAME)
    assert lines.wait_for(lambda line: line.endswith(f"vm {NAME} paused (paused)"), 10), lines.lines
    code, err = lines.interrupt()
    assert code == 0 and err == "", err


def test_events_json_sees_a_memory_snapshot_then_kill_and_start(vm):
    lines = Lines(vm.popen("events", "--json", "--filter", f"vm={NAME}"))
    _listening(vm, lines, lambda line: '"resumed"' in line)

    def got(event: str, detail: str):
        return lambda line: (lambda e: e["event"] == event and e["detail"] == detail and e["vm"] == NAME)(json.loads(line))

    # libvirt has no "snapshot taken" event: the pause QEMU needs to save the memory says it
    vm("snapshot", "create", NAME, "s1", timeout=120)
    assert lines.wait_for(got("paused", "snapshot"), 10), lines.lines
    assert lines.wait_for(got("resumed", "snapshot"), 10), lines.lines
    t0 = time.monotonic()
    vm("kill", NAME)
    vm("start", NAME)
    assert lines.wait_for(got("stopped", "destroyed"), 30), lines.lines
    assert lines.wait_for(got("started", "booted"), 30), lines.lines
    record("events: kill + start seen within", time.monotonic() - t0, how="max", unit="s")
    code, err = lines.interrupt()
    assert code == 0 and err == "", err
    assert all(json.loads(line)["vm"] == NAME for line in lines.lines)
