"""Named fault points: places inside multi-step operations where a test kills vmctl on purpose.

``point("create.after-define")`` does nothing unless the environment variable ``VMCTL_TEST_FAULT``
names that point (a test-only switch, never set in normal use): then the process sends itself
SIGKILL right there, as a power cut or an OOM kill would. The crash-safety tests run each
operation once per point and check that ``vmctl doctor`` finds exactly what was left and
``doctor --fix`` mends it. `POINTS` lists every point, so a test can tell when one goes untested.
"""

from __future__ import annotations

import os
import signal

ENV = "VMCTL_TEST_FAULT"

POINTS = (
    "create.after-hold", "create.after-disk", "create.after-rename", "create.after-define",
    "rm.after-mark", "rm.after-undefine",
    "snapshot.create.after-intent", "snapshot.create.after-data",
    "snapshot.revert.before", "snapshot.rm.after-delete",
    "commit.after-layer", "store.publish.after-blobs",
    "import.after-convert",
    "pull.after-download", "pull.after-ingest",
    "push.after-compress", "push.after-upload",
    "load.after-ingest",
)

# `vmctl up` between VMs: killed by tests/e2e/test_stack_e2e.py (an up must resume on a real daemon:
# the test driver forgets everything when its process dies).
STACK_POINTS = ("stack.after-create", "stack.after-remove")

# On a vmctl host: killed by tests/e2e/test_fleet_e2e.py (a host's leftovers, found and mended by
# `vmctl --host H doctor`).
HOST_POINTS = ("host.create.after-overlay", "host.create.after-define", "migrate.after-stage")

_KNOWN = frozenset(POINTS + STACK_POINTS + HOST_POINTS)


def point(name: str) -> None:
    """Die here, by SIGKILL, if the test asked for this point (see the module doc)."""
    if name not in _KNOWN:
        raise ValueError(f"unknown fault point {name!r}: add it to vmctl.faults.POINTS")
    wanted = os.environ.get(ENV)
    if wanted and wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
