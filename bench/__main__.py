"""Run every benchmark script and write BENCHMARKS.md.

    python -m bench [--runs 3] [--only a,b | --skip a,b | --report] [--out BENCHMARKS.md] [--results DIR]

From the repository root (``make bench``). Each ``bench/<name>_bench.py`` runs as its own process
(``--runs N --json-out FILE``) with its output streamed here as it comes; a script that fails is
reported as failed in the file, with the end of its stderr, and the others still run. The file
then holds the date, this command, the machine and tool versions, one table of figures per
script and the goals of bench/goals.py, met or not. Exits 1 if any script failed (after writing).

Each script's figures are also kept in bench/results/<name>.json (committed with BENCHMARKS.md),
so a run of some scripts (``--only``) rewrites the file with the others' last figures, each
marked with the date it was measured: one slow script can be measured again without the rest.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import figures, goals, report
from bench.benchhost import machine_facts, tool_versions

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
STDERR_TAIL = 20


def scripts() -> dict[str, Path]:
    """Short name -> script, for every bench/<name>_bench.py, in name order."""
    return {p.name.removesuffix("_bench.py"): p for p in sorted(BENCH.glob("*_bench.py"))}


def run_script(name: str, path: Path, runs: int, out_dir: Path) -> report.ScriptRun:
    """Run one script to the end, its stdout to ours and its stderr through ours (keeping the tail)."""
    json_out = out_dir / f"{name}.json"
    argv = [sys.executable, str(path), "--runs", str(runs), "--json-out", str(json_out)]
    print(f"\n==> {shlex.join(argv)}", flush=True)
    # unbuffered, so a script's lines show as they are printed even where our stdout is a pipe
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    t0 = time.monotonic()
    with subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, errors="replace") as proc:
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.rstrip("\n"))
    seconds = time.monotonic() - t0
    data = None
    if proc.returncode == 0:
        try:
            data = figures.load(json_out)
        except FileNotFoundError:
            pass
        except ValueError as e:   # a broken file is the script's failure, reported like one
            tail.append(f"(bench runner: {json_out.name} is not valid JSON: {e})")
    return report.ScriptRun(name, proc.returncode, seconds, data, list(tail))


def keep(run: report.ScriptRun, results: Path, ran_at: datetime) -> None:
    """Save a successful run's figures as results/<name>.json, with when it ran and how long it took."""
    data = {k: v for k, v in run.data.items() if k != "by_name"}
    data["ran_at"] = ran_at.strftime("%Y-%m-%d %H:%M:%S")
    data["seconds"] = round(run.seconds, 1)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{run.name}.json").write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")


def earlier(name: str, results: Path) -> report.ScriptRun | None:
    """The figures kept from `name`'s last successful run, or None (none kept, or unreadable)."""
    try:
        data = figures.load(results / f"{name}.json")
    except (OSError, ValueError):
        return None
    return report.ScriptRun(name, 0, float(data.get("seconds") or 0), data, earlier=str(data.get("ran_at") or "?"))


def _names(value: str, known: dict[str, Path], ap: argparse.ArgumentParser) -> set[str]:
    names = set(filter(None, (x.strip() for x in value.split(","))))
    unknown = names - known.keys()
    if unknown:
        ap.error(f"unknown bench(es): {', '.join(sorted(unknown))}; there are: {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> int:
    known = scripts()
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each measurement, passed to every script")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--only", default="", help=f"comma-separated short names, of: {', '.join(known)}")
    group.add_argument("--skip", default="", help="comma-separated short names to leave out")
    group.add_argument("--report", action="store_true",
                       help="run nothing: write the file again from the kept figures (after editing GOALS-NOTES.md)")
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md",
                    help="the file to write (default: BENCHMARKS.md at the repository root)")
    ap.add_argument("--results", type=Path, default=None,
                    help="where each script's figures are kept between runs (default: bench/results)")
    args = ap.parse_args(argv)
    only, skip = _names(args.only, known, ap), _names(args.skip, known, ap)
    selected = [] if args.report else [n for n in known if (not only or n in only) and n not in skip]

    started = datetime.now(timezone.utc)
    # the exact command, as the interpreter was started (python -m bench ...), for the file
    command = shlex.join(sys.orig_argv) if argv is None else shlex.join(["python", "-m", "bench", *argv])
    machine, versions = machine_facts(), tool_versions()
    results = args.results or RESULTS
    runs = []
    with tempfile.TemporaryDirectory(prefix="vmctl-bench-json-") as tmp:
        for name in known:
            if name not in selected:
                kept = earlier(name, results)
                if kept is not None:
                    runs.append(kept)
                continue
            ran_at = datetime.now(timezone.utc)
            run = run_script(name, known[name], args.runs, Path(tmp))
            if run.ok:
                keep(run, results, ran_at)
            runs.append(run)
    text = report.render(runs, date=started, command=command, machine=machine, versions=versions,
                         goals=goals.GOALS, notes=goals.read_notes(BENCH / "GOALS-NOTES.md"),
                         available=set(known))
    args.out.write_text(text)
    failed = [r.name for r in runs if not r.ok]
    fresh = sum(r.earlier is None for r in runs)
    print(f"\nwrote {args.out}: {fresh - len(failed)} script(s) ok, {len(runs) - fresh} from earlier runs"
          + (f", failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
