"""Running the external tools a build needs, with argument lists only (never a shell)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from vmctl.errors import ExternalToolError

_TAIL = 800


def require(tool: str, package: str) -> str:
    """Return the path of ``tool`` or raise ``ExternalToolError`` naming the Debian package."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise ExternalToolError(tool, f"not found; install the Debian package {package}")
    return path


def run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``args`` and return its stdout; on failure raise ``ExternalToolError`` with stderr's tail."""
    try:
        proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ExternalToolError(Path(args[0]).name, f"not found ({exc.filename})") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-_TAIL:]
        raise ExternalToolError(Path(args[0]).name, f"exit status {proc.returncode}: {tail}")
    return proc.stdout
