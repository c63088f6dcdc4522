"""Parsing repeated option values shared by several commands."""

from __future__ import annotations

from vmctl.errors import UsageError


def key_values(values: tuple[str, ...], option: str) -> dict[str, str]:
    """``KEY=VALUE`` items (``--label``, ``--build-arg``) as a dict; one line naming the option
    for an item without ``=`` or a key."""
    out = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"{option} takes KEY=VALUE, not {item!r}")
        out[key] = value
    return out
