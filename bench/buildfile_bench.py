"""Vmfile builds on vmctl's tiny guest: a cold build, a no-op rebuild, a rebuild with only the last
step changed, a whole rebuild (``--no-cache``), and the same steps done by hand (``vmctl run`` +
``exec``/``cp`` + ``commit`` + ``rm``). Whole CLI processes, wall clock, medians of `--runs`.
Goal: a no-op rebuild in ≤ 1 s. No assertions.

    python bench/buildfile_bench.py [--runs 3] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import figure_names as names  # noqa: E402
from benchhost import describe, timed_vmctl  # noqa: E402
from figures import Figures  # noqa: E402

VMFILE = """FROM tiny
COPY index.html /srv/www/
RUN echo built > /srv/www/built.txt
RUN mkdir -p /opt/app && dd if=/dev/urandom of=/opt/app/blob bs=1M count=4 2>/dev/null
CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/srv/www"{extra}]
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    figs = Figures("buildfile", describe("Vmfile build bench"), params=vars(args))
    print(figs.machine)
    root = Path(tempfile.mkdtemp(prefix="vmctl-buildbench-", dir="/var/tmp"))   # the data root itself
    ctx = Path(tempfile.mkdtemp(prefix="vmctl-buildbench-ctx-", dir="/var/tmp"))
    (ctx / "index.html").write_text("<h1>bench</h1>\n")
    env = {**os.environ, "VMCTL_ROOT": str(root), "VMCTL_CONFIG": "/dev/null"}

    vmctl = timed_vmctl(env)

    times: dict[str, list[float]] = {}
    try:
        vmctl("image", "build", "tiny")
        for run in range(args.runs):
            (ctx / "Vmfile").write_text(VMFILE.format(extra=""))
            times.setdefault(names.BUILDFILE_COLD, []).append(vmctl("build", "--no-cache", "-t", f"b:{run}", str(ctx)))
            times.setdefault(names.BUILDFILE_NOOP, []).append(vmctl("build", "-t", f"b:{run}", str(ctx)))
            (ctx / "Vmfile").write_text(VMFILE.format(extra=f', "-v{run}"'))
            times.setdefault(names.BUILDFILE_LAST_STEP, []).append(vmctl("build", "-t", f"c:{run}", str(ctx)))
            name = f"byhand{run}"
            t0 = time.perf_counter()
            vmctl("run", name, "--image", "tiny")
            vmctl("exec", name, "--", "mkdir", "-p", "/srv/www")
            vmctl("cp", str(ctx / "index.html"), f"{name}:/srv/www/index.html")
            vmctl("exec", name, "--", "sh", "-c", "echo built > /srv/www/built.txt")
            vmctl("exec", name, "--", "sh", "-c", "mkdir -p /opt/app && dd if=/dev/urandom of=/opt/app/blob bs=1M count=4")
            vmctl("exec", name, "--", "sh", "-c", "echo '::respawn:/bin/busybox httpd -f -p 8080 -h /srv/www' >> /etc/inittab")
            vmctl("commit", name, f"h:{run}")
            vmctl("rm", "-f", name)
            times.setdefault(names.BUILDFILE_BY_HAND, []).append(time.perf_counter() - t0)
    finally:
        subprocess.run([sys.executable, "-m", "vmctl", "rm", "-f", *[f"byhand{r}" for r in range(args.runs)]],
                       env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(ctx, ignore_errors=True)
    # a rebuild is judged against the cold build, the cold build against the same steps by hand
    peers = {names.BUILDFILE_NOOP: names.BUILDFILE_COLD, names.BUILDFILE_LAST_STEP: names.BUILDFILE_COLD,
             names.BUILDFILE_COLD: names.BUILDFILE_BY_HAND}
    for label, xs in times.items():
        print(f"{label:<48}{statistics.median(xs):8.2f} s  (runs: {', '.join(f'{x:.2f}' for x in xs)})")
        figs.add(label, xs, peer=peers.get(label))
    cold, noop, last = (statistics.median(times[k]) for k in (names.BUILDFILE_COLD, names.BUILDFILE_NOOP, names.BUILDFILE_LAST_STEP))
    print(f"no-op rebuild is {cold / noop:.0f}x faster than a cold build; last-step rebuild {cold / last:.1f}x")
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    main()
