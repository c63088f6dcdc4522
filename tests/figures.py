"""Figures the suite prints at its end (hostile inputs tried, fault points killed and mended,
files checked, peak memory under hostile answers): tests `record` them, conftest prints them.

Counts add up (``how="sum"``); sizes and peaks keep their maximum (``how="max"``). Nothing here is
asserted: a test asserts its own bound and records the figure it measured.
"""

from __future__ import annotations

FIGURES: dict[str, tuple[str, float]] = {}


def record(name: str, value: float, how: str = "sum", unit: str = "") -> None:
    key = f"{name} ({unit})" if unit else name
    old = FIGURES.get(key, (how, 0 if how == "sum" else float("-inf")))[1]
    FIGURES[key] = (how, old + value if how == "sum" else max(old, value))


def lines() -> list[str]:
    out = []
    for key in sorted(FIGURES):
        how, value = FIGURES[key]
        shown = f"{value:.1f}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"
        out.append(f"{key}: {shown}" + (" (peak)" if how == "max" else ""))
    return out
