"""``make test``: every tier, as two pytest processes at once, so the 2-core CI machine is busy on
both cores (a TCG guest keeps one vCPU thread busy; most tests wait on one guest at a time).

- the cloud-guest tier (systemd guests that boot in about a minute each, and the system-mode tier
  in its own network namespace with its own libvirtd) runs in the background, its output kept in
  a log that is printed when it ends;
- everything else runs in the foreground.

The two share nothing that could collide: they use different data roots and VM names (libvirt's
cgroups are named after the domain), every port is picked free, and the images both build are
built once first (the tiny guest; the cloud guest is only the background tier's). The run fails if
either fails. Arguments are passed to both pytest processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BACKGROUND = ["tests/e2e/test_cloud_e2e.py", "tests/e2e/test_system_mode_e2e.py"]
COMMON = ["-v", "-p", "no:cacheprovider", "--durations=25"]


def _prewarm() -> None:
    """Build the tiny guest into the shared build cache once, before two processes want it."""
    root = Path(tempfile.mkdtemp(prefix="vmctl-prewarm-", dir="/var/tmp"))
    env = dict(os.environ, VMCTL_ROOT=str(root), VMCTL_CONFIG="/dev/null")
    try:
        subprocess.run([sys.executable, "-m", "vmctl", "-q", "image", "build", "tiny"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    finally:
        subprocess.run(["rm", "-rf", str(root)])


def main(argv: list[str]) -> int:
    t0 = time.monotonic()
    _prewarm()
    log_path = Path(tempfile.mkstemp(prefix="vmctl-tier-cloud-", suffix=".log")[1])
    with open(log_path, "wb") as log:
        background = subprocess.Popen([sys.executable, "-m", "pytest", *COMMON, *argv, *BACKGROUND],
                                      stdout=log, stderr=subprocess.STDOUT)
        ignore = [f"--ignore={p}" for p in BACKGROUND]
        try:
            foreground = subprocess.run([sys.executable, "-m", "pytest", *COMMON, *argv, *ignore, "tests"])
        except BaseException:   # Ctrl-C: the background tier goes too (its fixtures clean up on SIGTERM)
            background.terminate()
            background.wait()
            raise
        code = background.wait()
    print(f"\n== background tier ({' '.join(BACKGROUND)}): exit {code} ==", flush=True)
    sys.stdout.write(log_path.read_text(errors="replace"))
    log_path.unlink()
    print(f"== both tiers took {time.monotonic() - t0:.0f} s ==", flush=True)
    return foreground.returncode or code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
