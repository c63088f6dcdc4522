"""The figures a benchmark script hands to the runner (``python -m bench``) as one JSON file.

A script records what it prints: timed samples (``add``) and single values such as sizes,
throughput or memory (``value``). A figure may name a *peer*: another figure of the same script,
measured in the same run on the same inputs (vmctl against virt-install, qemu-img, plain QEMU...),
so the report can show the ratio figure/peer. ``save`` writes::

    {"bench": ..., "machine": ..., "versions": {...}, "params": {...},
     "figures": [{"name", "unit", "samples", "median", "p95", "peer", "lower_is_better"}, ...]}

Standard library only, and no import of the other bench modules: the scripts import this file as
the top-level module ``figures`` (bench/ is their sys.path[0]), the runner and the tests as
``bench.figures``.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from pathlib import Path


def _finite(samples) -> list[float]:
    return [x for x in samples if x is not None and math.isfinite(x)]


def median(samples) -> float | None:
    """The median of the finite samples (NaN and None are lost measurements); None if there are none."""
    xs = _finite(samples)
    return statistics.median(xs) if xs else None


def p95(samples, lower_is_better: bool = True) -> float | None:
    """The 95th percentile of the finite samples by nearest rank, on the worse side of the figure.

    Nearest rank: the ceil(0.95 n)-th smallest sample. With fewer than 20 samples that is the
    largest one, so with the usual 3 to 5 runs "p95" is simply the worst run. For a figure where
    higher is better (throughput), the worse tail is the low one: the value 95 % of the runs reach
    or beat, the ceil(0.95 n)-th largest (the smallest with few samples).
    """
    xs = sorted(_finite(samples), reverse=not lower_is_better)
    if not xs:
        return None
    rank = -(-95 * len(xs) // 100)   # ceil(0.95 n), in integers so no float rounding can move the rank
    return xs[rank - 1]


def ratio(figure: dict, peer: dict | None) -> float | None:
    """median(figure) / median(peer), or None where either is missing or the peer's median is not positive."""
    if peer is None or figure.get("median") is None or peer.get("median") is None or peer["median"] <= 0:
        return None
    return figure["median"] / peer["median"]


class Figures:
    """Named figures of one benchmark script, in the order it records them."""

    def __init__(self, bench: str, machine: str = "", versions: dict[str, str] | None = None,
                 params: dict | None = None):
        self.bench = bench
        self.machine = machine
        self.versions = {"python": platform.python_version(), **(versions or {})}
        # the script's options (data sizes, domain count...): figures mean little without them
        self.params = {k: v for k, v in (params or {}).items() if k != "json_out"}
        self.figures: list[dict] = []

    def add(self, name: str, samples, unit: str = "s", peer: str | None = None,
            lower_is_better: bool = True) -> None:
        """Record the samples of one figure (one per run); a NaN or None sample is kept as a lost run (null).

        `peer` names another figure of this script measured in the same run on the same inputs;
        it may be recorded before or after this one. A name recorded twice is a bug: ValueError.
        """
        if any(f["name"] == name for f in self.figures):
            raise ValueError(f"figure {name!r} recorded twice")
        xs = [float("nan") if x is None else float(x) for x in samples]
        self.figures.append({
            "name": name, "unit": unit,
            "samples": [x if math.isfinite(x) else None for x in xs],
            "median": median(xs), "p95": p95(xs, lower_is_better),
            "peer": peer, "lower_is_better": lower_is_better})

    def value(self, name: str, value: float, unit: str, peer: str | None = None,
              lower_is_better: bool = True) -> None:
        """Record a single value (a size, a throughput, a peak RSS): a figure of one sample."""
        self.add(name, [value], unit, peer, lower_is_better)

    def to_dict(self) -> dict:
        return {"bench": self.bench, "machine": self.machine, "versions": self.versions,
                "params": self.params, "figures": self.figures}

    def save(self, path: str | Path) -> None:
        """Write the figures as JSON to `path` (strict JSON: lost samples are null, never NaN)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str) + "\n")


def load(path: str | Path) -> dict:
    """The dict ``Figures.save`` wrote, with its figures also indexed by name under ``"by_name"``."""
    data = json.loads(Path(path).read_text())
    data["by_name"] = {f["name"]: f for f in data.get("figures", [])}
    return data


def show(value: float | None, unit: str) -> str:
    """A value for a person: seconds under one as ms, MiB and MiB/s to 0.1, bytes with separators."""
    if value is None:
        return "—"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "bytes":
        return f"{value:,.0f} bytes"
    if unit in ("MiB", "MiB/s", "GiB"):
        return f"{value:.1f} {unit}"
    return f"{value:g} {unit}".rstrip()
