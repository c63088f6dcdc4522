"""BENCHMARKS.md from the runner's results: a pure function of its inputs, so tests can feed it
fake results and read the markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bench.figures import ratio, show
from bench.goals import MET, NOT_MEASURED, NOT_MET, Goal, evaluate

NO_NOTE = "not yet analysed"


@dataclass
class ScriptRun:
    """One script as the runner ran it: `data` is its ``figures.load`` dict, None if it gave none."""
    name: str                      # short name: bench/<name>_bench.py
    returncode: int
    seconds: float
    data: dict | None = None
    stderr_tail: list[str] = field(default_factory=list)
    earlier: str | None = None     # not run this time: the UTC date of the run its figures are from

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.data is not None


def _cell(text: str) -> str:
    # a "|" inside a cell would split it
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _runs(fig: dict) -> str:
    samples = fig.get("samples", [])
    kept = sum(x is not None for x in samples)
    return str(kept) if kept == len(samples) else f"{kept} of {len(samples)}"


def figures_table(data: dict) -> list[str]:
    """figure | median | p95 | runs | peer | ratio (median figure / median peer), one row per figure."""
    by_name = {f["name"]: f for f in data.get("figures", [])}
    rows = []
    for fig in data.get("figures", []):
        peer = by_name.get(fig.get("peer")) if fig.get("peer") else None
        r = ratio(fig, peer)
        rows.append([fig["name"], show(fig.get("median"), fig["unit"]),
                     show(fig.get("p95"), fig["unit"]) if len(fig.get("samples", [])) > 1 else "",
                     _runs(fig), fig.get("peer") or "", f"{r:.2f}×" if r is not None else ""])
    return _table(["figure", "median", "p95", "runs", "peer", "ratio"], rows)


def _script_section(run: ScriptRun) -> list[str]:
    out = [f"### {run.name} (`bench/{run.name}_bench.py`)", ""]
    if not run.ok:
        why = f"exit status {run.returncode}" if run.returncode != 0 else "exited 0 but wrote no figures"
        out += [f"**Failed** after {run.seconds:.0f} s ({why}). Last lines of its stderr:", "", "```",
                *(run.stderr_tail or ["(nothing on stderr)"]), "```", ""]
        return out
    data = run.data
    when = f"Measured {run.earlier} (UTC), by an earlier run of the runner; took" if run.earlier else "Took"
    out.append(f"{when} {run.seconds:.0f} s. Machine as the script saw it: {data.get('machine') or '?'}.")
    params = data.get("params") or {}
    if params:
        out.append("Options: " + ", ".join(f"`{k}={v}`" for k, v in params.items()) + ".")
    versions = {k: v for k, v in (data.get("versions") or {}).items() if k != "python"}
    if versions:
        out.append("Versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    out.append("")
    if data.get("figures"):
        out += figures_table(data)
    else:
        out.append("No figures (every part of it was skipped).")
    out.append("")
    return out


def _why_missing(goal: Goal, runs: dict[str, ScriptRun], available: set[str]) -> str:
    if goal.bench not in available:
        return f"no script measures it yet (bench/{goal.bench}_bench.py)"
    run = runs.get(goal.bench)
    if run is None:
        return f"{goal.bench} not run this time"
    return f"{goal.bench} failed"


def goals_section(goals: tuple[Goal, ...] | list[Goal], runs: dict[str, ScriptRun], available: set[str],
                  notes: dict[str, str]) -> list[str]:
    """The goals table (goal | measured | status), then what stands in the way of each goal not met."""
    verdicts = []
    for goal in goals:
        run = runs.get(goal.bench)
        data = run.data if run is not None and run.ok else None
        verdicts.append(evaluate(goal, data, _why_missing(goal, runs, available)))
    counts = {s: sum(v.status == s for v in verdicts) for s in (MET, NOT_MET, NOT_MEASURED)}
    out = ["## Goals", "",
           f"{counts[MET]} met, {counts[NOT_MET]} not met, {counts[NOT_MEASURED]} not measured. "
           "A ratio is median / median of two figures of one script, measured in the same run on the same inputs.",
           ""]
    out += _table(["goal", "id", "measured", "status"],
                  [[v.goal.text, f"`{v.goal.id}`", v.measured,
                    f"**{v.status}**" if v.status == NOT_MET else v.status] for v in verdicts])
    missed = [v for v in verdicts if v.status == NOT_MET]
    if missed:
        out += ["", "### What stands in the way", "",
                "From bench/GOALS-NOTES.md (by hand, one `## <goal id>` section per goal).", ""]
        for v in missed:
            out += [f"#### `{v.goal.id}`: {v.goal.text}", "", f"Measured: {v.measured}.", "",
                    notes.get(v.goal.id) or NO_NOTE, ""]
    return out


def render(runs: list[ScriptRun], *, date: datetime, command: str, machine: dict[str, str],
           versions: dict[str, str], goals: tuple[Goal, ...] | list[Goal], notes: dict[str, str],
           available: set[str]) -> str:
    """The whole BENCHMARKS.md: header, machine and versions, one table per script, the goals.

    `available` holds the short names of every bench script there is (run or not), so a goal
    whose script does not exist yet is told apart from one whose script was skipped.
    """
    out = ["# vmctl benchmarks", "",
           "Written by the benchmark runner (`python -m bench`, bench/__main__.py): run it again rather than "
           "edit this file; what stands in the way of a goal is written in bench/GOALS-NOTES.md. "
           "Each script runs its own peers in the same run on the same inputs. "
           "p95 is by nearest rank on the worse side (with fewer than 20 runs, the worst run); "
           "the ratio is the figure's median over its peer's. Nothing here is a timed test.", "",
           f"- Date (UTC): {date.strftime('%Y-%m-%d %H:%M:%S')}",
           f"- Command: `{command}`",
           f"- Scripts run by this command: {', '.join(r.name for r in runs if r.earlier is None) or 'none'}"
           f" ({sum(r.ok for r in runs if r.earlier is None)} ok, {sum(not r.ok for r in runs)} failed)",
           f"- Figures kept from earlier runs (bench/results/): "
           f"{', '.join(f'{r.name} ({r.earlier})' for r in runs if r.earlier) or 'none'}", "",
           "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in machine.items()]
    out += ["", "## Versions", ""]
    out += _table(["tool", "version"], [[k, v] for k, v in versions.items()])
    out += ["", "## Results", ""]
    for run in runs:
        out += _script_section(run)
    out += goals_section(goals, {r.name: r for r in runs}, available, notes)
    return "\n".join(out).rstrip() + "\n"
