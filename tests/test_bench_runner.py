"""The benchmark runner's own logic (bench/__main__.py, figures, goals, report), on fake results:
no real benchmark runs here, only two tiny stand-in scripts for the runner's process handling."""

from __future__ import annotations

import ast
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

import bench.__main__ as runner
from bench import figure_names, goals, report
from bench.figures import Figures, load, median, p95, ratio, show
from bench.goals import MET, NOT_MEASURED, NOT_MET, Goal, evaluate, read_notes

BENCH = Path(__file__).resolve().parent.parent / "bench"


# --- statistics --------------------------------------------------------------------------------

def test_median_skips_lost_runs():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert median([1.0, float("nan"), None, 3.0]) == 2.0
    assert median([]) is None and median([float("nan")]) is None


def test_p95_nearest_rank():
    assert p95([0.3, 0.1, 0.2]) == 0.3                       # few samples: the worst run
    assert p95(list(range(1, 20))) == 19                     # ceil(0.95 * 19) = 19: still the max
    assert p95(list(range(1, 21))) == 19                     # ceil(0.95 * 20) = 19
    assert p95(list(range(1, 101))) == 95
    assert p95(list(range(1, 61))) == 57
    assert p95([5.0]) == 5.0 and p95([]) is None
    assert p95([1.0, float("nan"), 2.0]) == 2.0


def test_p95_higher_is_better_takes_the_low_tail():
    assert p95([100.0, 80.0, 90.0], lower_is_better=False) == 80.0
    assert p95(list(range(1, 101)), lower_is_better=False) == 6


def test_ratio_and_show():
    assert ratio({"median": 1.0}, {"median": 4.0}) == 0.25
    assert ratio({"median": 1.0}, None) is None
    assert ratio({"median": 1.0}, {"median": 0.0}) is None
    assert ratio({"median": None}, {"median": 1.0}) is None
    assert show(0.0421, "s") == "42.1 ms" and show(12.345, "s") == "12.35 s"
    assert show(1234567, "bytes") == "1,234,567 bytes" and show(81.25, "MiB/s") == "81.2 MiB/s"
    assert show(None, "s") == "—"


# --- the JSON a script writes ------------------------------------------------------------------

def test_figures_json_round_trip(tmp_path):
    figs = Figures("store", "host x86_64 2 cpus", {"qemu-img": "7.2"}, {"runs": 3, "json_out": "x.json"})
    figs.add("vmctl import, 1 GiB", [2.0, 3.0, float("nan")], peer="qemu-img convert, 1 GiB")
    figs.add("qemu-img convert, 1 GiB", [1.0, 1.5, 2.0])
    figs.value("throughput", 80.0, "MiB/s", lower_is_better=False)
    path = tmp_path / "store.json"
    figs.save(path)

    strict = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert strict["bench"] == "store" and strict["machine"] == "host x86_64 2 cpus"
    assert strict["versions"]["qemu-img"] == "7.2" and "python" in strict["versions"]
    assert strict["params"] == {"runs": 3}                   # the output path is not an option of the figures
    data = load(path)
    imp = data["by_name"]["vmctl import, 1 GiB"]
    assert imp == {"name": "vmctl import, 1 GiB", "unit": "s", "samples": [2.0, 3.0, None], "median": 2.5,
                   "p95": 3.0, "peer": "qemu-img convert, 1 GiB", "lower_is_better": True}
    assert data["by_name"]["throughput"]["samples"] == [80.0]
    assert [f["name"] for f in data["figures"]] == ["vmctl import, 1 GiB", "qemu-img convert, 1 GiB", "throughput"]


def test_a_figure_recorded_twice_is_refused():
    figs = Figures("x")
    figs.add("a", [1.0])
    with pytest.raises(ValueError):
        figs.value("a", 2.0, "s")


def test_none_samples_are_lost_runs():
    figs = Figures("build")
    figs.add("boot to SSH banner", [None, 2.0, 4.0])
    assert figs.figures[0]["samples"] == [None, 2.0, 4.0] and figs.figures[0]["median"] == 3.0


# --- goals ---------------------------------------------------------------------------------------

def _data(*figs: dict) -> dict:
    return {"figures": list(figs), "by_name": {f["name"]: f for f in figs}}


def _fig(name: str, med: float | None, unit: str = "s", peer: str | None = None) -> dict:
    return {"name": name, "unit": unit, "samples": [med], "median": med, "p95": med, "peer": peer,
            "lower_is_better": unit == "s"}


def test_evaluate_a_ratio_goal():
    goal = Goal("push", "push ≤ 1.0× skopeo", "registry", "vmctl push", "skopeo push", "<=", 1.0)
    met = evaluate(goal, _data(_fig("vmctl push", 1.8), _fig("skopeo push", 2.0)))
    assert met.status == MET and met.measured.startswith("0.90×")
    assert evaluate(goal, _data(_fig("vmctl push", 2.2), _fig("skopeo push", 2.0))).status == NOT_MET


def test_evaluate_a_median_goal_and_a_higher_is_better_goal():
    goal = Goal("ls-150ms", "ls ≤ 150 ms", "instances", "ls", None, "<=", 0.150)
    assert evaluate(goal, _data(_fig("ls", 0.149))).status == MET
    v = evaluate(goal, _data(_fig("ls", 0.151)))
    assert v.status == NOT_MET and v.measured == "151.0 ms"
    up = Goal("volume-read", "≥ 50 %", "volume", "vol", "disk", ">=", 0.5)
    assert evaluate(up, _data(_fig("vol", 60, "MiB/s"), _fig("disk", 100, "MiB/s"))).status == MET
    assert evaluate(up, _data(_fig("vol", 40, "MiB/s"), _fig("disk", 100, "MiB/s"))).status == NOT_MET


def test_evaluate_what_cannot_be_measured():
    goal = Goal("push", "push", "registry", "vmctl push", "skopeo push", "<=", 1.0)
    assert evaluate(goal, None, "registry failed") == goals.Verdict(goal, NOT_MEASURED, "registry failed")
    no_peer = evaluate(goal, _data(_fig("vmctl push", 1.0)))
    assert no_peer.status == NOT_MEASURED and "skopeo push" in no_peer.measured
    lost = evaluate(goal, _data(_fig("vmctl push", None), _fig("skopeo push", 1.0)))
    assert lost.status == NOT_MEASURED


def test_goals_are_well_formed():
    ids = [g.id for g in goals.GOALS]
    assert len(ids) == len(set(ids))
    assert all(g.op in ("<=", ">=") and g.limit > 0 and g.text for g in goals.GOALS)
    assert set(ids) == set(read_notes(BENCH / "GOALS-NOTES.md"))   # a section per goal, no stray ones


def _goal_names() -> list[tuple[str, str]]:
    """(bench, figure_names attribute) for the figure and peer of every Goal(...) in goals.py."""
    out = []
    for node in ast.walk(ast.parse((BENCH / "goals.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Goal":
            bench = node.args[2].value
            for arg in node.args[3:5]:
                target = arg.func if isinstance(arg, ast.Call) else arg
                if isinstance(target, ast.Attribute):
                    out.append((bench, target.attr))
    return out


def test_goal_figures_are_the_names_their_scripts_record():
    # the scripts run by hand, not in CI: a goal whose name drifted from its script would stay
    # "not measured" unseen, so each name a goal takes from figure_names is used by its script
    pairs = _goal_names()
    assert len(pairs) >= len(goals.GOALS)
    for bench_name, attr in pairs:
        assert hasattr(figure_names, attr)
        script = BENCH / f"{bench_name}_bench.py"
        if script.exists():
            assert f"names.{attr}" in script.read_text(), f"{script.name} does not record names.{attr}"


def test_scripts_use_only_names_that_exist():
    for script in BENCH.glob("*_bench.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "names":
                assert hasattr(figure_names, node.attr), f"{script.name}: names.{node.attr}"


def test_read_notes(tmp_path):
    notes = tmp_path / "GOALS-NOTES.md"
    notes.write_text("# preamble\ntext\n\n## push\n\nzstd at level 3 costs 0.4 s.\n\n## pull\n\n## ls-150ms\nslow\n")
    assert read_notes(notes) == {"push": "zstd at level 3 costs 0.4 s.", "pull": "", "ls-150ms": "slow"}
    assert read_notes(tmp_path / "missing.md") == {}


# --- the markdown ----------------------------------------------------------------------------------

FAKE_GOALS = (
    Goal("push", "`vmctl push` ≤ 1.0× `skopeo copy`", "registry", "vmctl push", "skopeo push", "<=", 1.0),
    Goal("pull", "`vmctl pull` ≤ 1.0× `skopeo copy`", "registry", "vmctl pull", "skopeo pull", "<=", 1.0),
    Goal("import-1g", "import ≤ 1.5× qemu-img convert", "store", "vmctl import, 1 GiB", "qemu-img convert, 1 GiB",
         "<=", 1.5),
    Goal("help", "`vmctl --help` ≤ 100 ms", "cli", "vmctl --help", None, "<=", 0.1),
    Goal("snap", "snapshot ≤ 50 ms", "snapshot", "create disk-only", None, "<=", 0.05),
)


def _render(tmp_path) -> str:
    figs = Figures("registry", "host x86_64 2 cpus", params={"runs": 3, "data_mib": 256})
    figs.add("vmctl push", [0.9, 0.98, 1.3], peer="skopeo push")
    figs.add("skopeo push", [1.0, 1.0, 1.2])
    figs.add("vmctl pull", [2.0, 2.2, 2.1], peer="skopeo pull")
    figs.add("skopeo pull", [1.0, 1.1, 1.2])
    figs.value("vmctl push throughput", 200.0, "MiB/s", lower_is_better=False)
    figs.save(tmp_path / "registry.json")
    runs = [report.ScriptRun("registry", 0, 61.2, load(tmp_path / "registry.json")),
            report.ScriptRun("store", 1, 3.0, None, ["Traceback (most recent call last):", "OSError: no space left"])]
    return report.render(
        runs, date=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc), command="python -m bench --only registry,store",
        machine={"CPU": "AMD EPYC", "/dev/kvm": "present"}, versions={"python": "3.11.2", "skopeo": "not installed"},
        goals=FAKE_GOALS, notes={"pull": "Decompression and qemu-img check take 0.8 s."},
        available={"registry", "store", "snapshot"})


def test_report_header_machine_and_versions(tmp_path):
    md = _render(tmp_path)
    assert md.startswith("# vmctl benchmarks\n")
    assert "- Date (UTC): 2025-01-02 03:04:05" in md
    assert "- Command: `python -m bench --only registry,store`" in md
    assert "- /dev/kvm: present" in md
    assert "| skopeo | not installed |" in md


def test_report_tables_per_script(tmp_path):
    md = _render(tmp_path)
    lines = md.splitlines()
    assert "| figure | median | p95 | runs | peer | ratio |" in lines
    assert "| vmctl push | 980.0 ms | 1.30 s | 3 | skopeo push | 0.98× |" in lines
    assert "| vmctl pull | 2.10 s | 2.20 s | 3 | skopeo pull | 1.91× |" in lines
    assert "| vmctl push throughput | 200.0 MiB/s |  | 1 |  |  |" in lines   # a single value: no p95
    assert "Options: `runs=3`, `data_mib=256`." in md
    store = md[md.index("### store"):md.index("## Goals")]
    assert "**Failed**" in store and "exit status 1" in store and "OSError: no space left" in store


def _goal_rows(md: str) -> dict[str, list[str]]:
    """Goal id -> the cells (goal, id, measured, status) of its row in the goals table."""
    rows = {}
    for line in md[md.index("## Goals"):].splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) == 4 and cells[1].startswith("`"):
            rows[cells[1].strip("`")] = cells
    return rows


def test_report_goals(tmp_path):
    md = _render(tmp_path)
    goals_part = md[md.index("## Goals"):]
    rows = _goal_rows(md)
    assert "1 met, 1 not met, 3 not measured" in goals_part
    assert rows["push"][2].startswith("0.98×") and rows["push"][3] == "met"
    assert rows["pull"][2].startswith("1.91×") and rows["pull"][3] == "**not met**"
    assert rows["import-1g"][2:] == ["store failed", "not measured"]
    assert rows["help"][2:] == ["no script measures it yet (bench/cli_bench.py)", "not measured"]
    assert rows["snap"][2:] == ["snapshot not run this time", "not measured"]
    way = goals_part[goals_part.index("### What stands in the way"):]
    assert "#### `pull`" in way and "Decompression and qemu-img check take 0.8 s." in way
    assert "#### `push`" not in way


def test_report_a_goal_not_met_without_notes(tmp_path):
    figs = Figures("snapshot")
    figs.add("create disk-only", [0.2, 0.3, 0.25])
    figs.save(tmp_path / "s.json")
    md = report.render([report.ScriptRun("snapshot", 0, 1.0, load(tmp_path / "s.json"))],
                       date=datetime.now(timezone.utc), command="python -m bench", machine={}, versions={},
                       goals=FAKE_GOALS[4:], notes={}, available={"snapshot"})
    assert "#### `snap`" in md and report.NO_NOTE in md


# --- the runner: process handling, with stand-in scripts ------------------------------------------

GOOD = f"""
import sys
sys.path.insert(0, {str(BENCH)!r})
from figures import Figures
print("figures coming")
figs = Figures("good", "fake machine", params={{"runs": int(sys.argv[2])}})
figs.add("vmctl push", [1.0] * int(sys.argv[2]), peer="skopeo push")
figs.add("skopeo push", [2.0] * int(sys.argv[2]))
figs.save(sys.argv[4])
"""
BAD = """
import sys
print("starting", flush=True)
for i in range(30):
    print(f"noise {i}", file=sys.stderr)
sys.exit("bad_bench needs root")
"""


@pytest.fixture
def fake_scripts(tmp_path, monkeypatch):
    (tmp_path / "good_bench.py").write_text(GOOD)
    (tmp_path / "bad_bench.py").write_text(BAD)
    known = {"bad": tmp_path / "bad_bench.py", "good": tmp_path / "good_bench.py"}
    monkeypatch.setattr(runner, "scripts", lambda: known)
    monkeypatch.setattr(runner, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(runner, "tool_versions", lambda: {"python": "3", "qemu-img": "not installed"})
    return known


def test_run_script_keeps_figures_and_the_tail_of_stderr(fake_scripts, tmp_path, capfd):
    good = runner.run_script("good", fake_scripts["good"], 2, tmp_path)
    assert good.ok and good.data["by_name"]["vmctl push"]["samples"] == [1.0, 1.0]
    bad = runner.run_script("bad", fake_scripts["bad"], 2, tmp_path)
    assert not bad.ok and bad.returncode == 1
    assert bad.stderr_tail[-1] == "bad_bench needs root" and len(bad.stderr_tail) == runner.STDERR_TAIL
    out, err = capfd.readouterr()
    assert "figures coming" in out and "starting" in out and "noise 0" in err   # streamed as it came


def test_main_writes_the_file_and_goes_on_after_a_failure(fake_scripts, tmp_path, monkeypatch):
    monkeypatch.setattr(goals, "GOALS", FAKE_GOALS[:1])
    out = tmp_path / "BENCHMARKS.md"
    assert runner.main(["--runs", "2", "--out", str(out)]) == 1
    md = out.read_text()
    assert "- Command: `python -m bench --runs 2 --out " in md
    assert "### bad (`bench/bad_bench.py`)" in md and "bad_bench needs root" in md
    assert "| vmctl push | 1.00 s | 1.00 s | 2 | skopeo push | 0.50× |" in md
    assert runner.main(["--only", "good", "--out", str(out)]) == 0
    assert "### bad" not in out.read_text()


def test_a_partial_run_keeps_the_figures_of_the_others(fake_scripts, tmp_path, monkeypatch):
    monkeypatch.setattr(goals, "GOALS", FAKE_GOALS[:1])
    out = tmp_path / "BENCHMARKS.md"
    assert runner.main(["--only", "good", "--out", str(out)]) == 0
    kept = json.loads((tmp_path / "results" / "good.json").read_text())
    assert kept["bench"] == "good" and "ran_at" in kept and "by_name" not in kept
    assert runner.main(["--only", "bad", "--out", str(out)]) == 1
    md = out.read_text()
    assert "### bad (`bench/bad_bench.py`)" in md and "bad_bench needs root" in md   # run now, failed
    assert f"Measured {kept['ran_at']} (UTC), by an earlier run" in md                # good, from before
    assert "| vmctl push | 1.00 s | 1.00 s | 3 | skopeo push | 0.50× |" in md
    assert f"- Figures kept from earlier runs (bench/results/): good ({kept['ran_at']})" in md
    assert not (tmp_path / "results" / "bad.json").exists()   # a failure never replaces kept figures
    assert runner.main(["--report", "--out", str(out)]) == 0       # nothing run: the kept figures only
    md = out.read_text()
    assert "- Scripts run by this command: none" in md and "### bad" not in md
    assert "| vmctl push | 1.00 s | 1.00 s | 3 | skopeo push | 0.50× |" in md


def test_main_refuses_unknown_names(fake_scripts, capsys):
    with pytest.raises(SystemExit):
        runner.main(["--skip", "nosuch"])
    assert "unknown bench(es): nosuch" in capsys.readouterr().err


def test_runner_finds_every_bench_script():
    assert set(runner.scripts()) >= {"build", "buildfile", "cloud", "instances", "registry", "snapshot", "stack",
                                     "store", "volume"}
