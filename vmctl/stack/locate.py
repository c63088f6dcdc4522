"""Where a directory's stack file is: cheap (no YAML or schema library), since every VM command
asks it to resolve short names."""

from __future__ import annotations

from pathlib import Path

ALTERNATIVES = ("vmctl.yaml", "vmctl.yml")


def find_file(directory: Path) -> Path | None:
    """The stack file of `directory` (vmctl.yaml, else vmctl.yml), or None."""
    for name in ALTERNATIVES:
        if (directory / name).is_file():
            return directory / name
    return None
