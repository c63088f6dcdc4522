"""Run the vmctl CLI in this process, then print its peak RSS (VmHWM) as the last stderr line.

VmHWM is this process's own peak (ru_maxrss would keep the parent's across exec), so a test can
bound what a hostile answer made vmctl hold in memory. Usage: python measured.py ARGS...
"""

import sys

from vmctl.cli.main import cli

code = 0
try:
    cli.main(args=sys.argv[1:], prog_name="vmctl", standalone_mode=True)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
with open("/proc/self/status") as fh:
    hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
sys.stderr.write(f"\nVMHWM_KIB={hwm}\n")
sys.exit(code)
