"""The benchmark goals of the issue, as data, and how each is judged from a script's figures.

A goal is one check: either the ratio of two figures of one script (the figure and its peer,
measured in the same run on the same inputs) or the median of one figure, against a limit. The
issue's compound goals ("push and pull ≤ 1.0× skopeo copy") are split into one goal per check,
so every row of BENCHMARKS.md has one measured value and one verdict.

Why a goal is not met is written by hand in bench/GOALS-NOTES.md, one ``## <goal id>`` section
per goal; ``read_notes`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench import figure_names as n
from bench.figures import ratio, show

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"


@dataclass(frozen=True)
class Goal:
    id: str
    text: str
    bench: str                # short name of the script that measures it: bench/<bench>_bench.py
    figure: str
    peer: str | None = None   # judge median(figure) / median(peer); None: judge median(figure)
    op: str = "<="            # "<=" or ">="
    limit: float = 1.0        # on the ratio, or on the median in the figure's own unit


@dataclass(frozen=True)
class Verdict:
    goal: Goal
    status: str               # MET, NOT_MET or NOT_MEASURED
    measured: str             # what was measured, for a person; why not, when not measured


GOALS: tuple[Goal, ...] = (
    Goal("create-1g", "`vmctl create` ≤ 0.5× qcow2 overlay + `virt-install --import`, whole processes, 1 GiB image",
         "instances", n.vmctl_create(1), n.virt_install_create(1), "<=", 0.5),
    Goal("create-20g", "`vmctl create` ≤ 0.5× qcow2 overlay + `virt-install --import`, whole processes, 20 GiB image",
         "instances", n.vmctl_create(20), n.virt_install_create(20), "<=", 0.5),
    Goal("run-ready-tiny", "`vmctl run` to SSH ready ≤ 1.1× plain QEMU to its SSH banner (tiny image)",
         "instances", n.INSTANCES_RUN, n.INSTANCES_PLAIN_BANNER, "<=", 1.1),
    Goal("warm-ready", "`vmctl run` of a checkpoint image to SSH ready ≤ 1.5 s (tiny, TCG)",
         "warm", n.WARM_RUN, None, "<=", 1.5),
    Goal("warm-vs-boot", "a warm start ≤ 0.5× plain QEMU booting the same guest to its SSH banner",
         "warm", n.WARM_RUN, n.WARM_PLAIN_BANNER, "<=", 0.5),
    Goal("warm-cloud-vs-boot", "a warm start of the Debian cloud guest ≤ 0.5× plain QEMU booting it (same SSH test)",
         "cloud", n.CLOUD_WARM_RUN, n.CLOUD_PLAIN, "<=", 0.5),
    Goal("tiny-boot", "the tiny guest's own boot (its uptime at SSH ready) ≤ 2 s",
         "lifecycle", n.LIFECYCLE_UPTIME, None, "<=", 2.0),
    Goal("run-ready-cloud", "`vmctl run` to SSH ready ≤ 1.1× plain QEMU + cloud-localds, same SSH test (Debian cloud guest)",
         "cloud", n.CLOUD_RUN, n.CLOUD_PLAIN, "<=", 1.1),
    Goal("ls-vs-virsh", "`vmctl ls -a` with 1,000 VMs ≤ `virsh list --all`",
         "instances", n.vmctl_ls(1000), n.virsh_list(1000), "<=", 1.0),
    Goal("ls-150ms", "`vmctl ls -a` with 1,000 VMs ≤ 150 ms",
         "instances", n.vmctl_ls(1000), None, "<=", 0.150),
    Goal("help", "`vmctl --help` ≤ 100 ms", "cli", n.CLI_HELP, None, "<=", 0.100),
    Goal("snapshot-create-disk", "disk-only snapshot create ≤ 50 ms",
         "snapshot", n.SNAPSHOT_CREATE_DISK, None, "<=", 0.050),
    Goal("snapshot-revert-memory", "revert to a memory and disk snapshot ≤ 1 s",
         "snapshot", n.SNAPSHOT_REVERT_MEMORY, None, "<=", 1.0),
    Goal("snapshot-revert-disk", "revert to a disk-only snapshot ≤ 1 s (the boot that follows not included)",
         "snapshot", n.SNAPSHOT_REVERT_DISK, None, "<=", 1.0),
    Goal("push", "`vmctl push` ≤ 1.0× `skopeo copy` to the same registry",
         "registry", n.REGISTRY_PUSH, n.REGISTRY_SKOPEO_PUSH, "<=", 1.0),
    Goal("pull", "`vmctl pull` ≤ 1.0× `skopeo copy` from the same registry",
         "registry", n.REGISTRY_PULL, n.REGISTRY_SKOPEO_PULL, "<=", 1.0),
    Goal("import-1g", "image import ≤ 1.5× `qemu-img convert`, 1 GiB disk",
         "store", n.store_import(1), n.store_convert(1), "<=", 1.5),
    Goal("import-20g", "image import ≤ 1.5× `qemu-img convert`, 20 GiB disk",
         "store", n.store_import(20), n.store_convert(20), "<=", 1.5),
    Goal("commit", "`vmctl commit` ≤ 1.5× a full `qemu-img convert` of the disk",
         "snapshot", n.SNAPSHOT_COMMIT, n.SNAPSHOT_CONVERT, "<=", 1.5),
    Goal("density", "≤ 64 MiB of QEMU PSS per idle VM", "density", n.DENSITY_PSS, None, "<=", 64),
    Goal("stop", "guest power-off to `vmctl stop` returning ≤ 300 ms (event-driven)", "lifecycle", n.LIFECYCLE_STOP, None, "<=", 0.300),
    Goal("chain-depth", "reads through a chain of 10 layers ≥ 90 % of the throughput through 1 layer",
         "chain", n.CHAIN_READ_10, n.CHAIN_READ_1, ">=", 0.9),
    # The issue sets no number for stacks; "no slower than doing it by hand" is the floor taken here.
    Goal("stack-up", "`vmctl up` of a two-VM stack ≤ 1.0× two sequential `vmctl run`s",
         "stack", n.STACK_UP, n.STACK_SEQUENTIAL, "<=", 1.0),
    Goal("vmfile-noop", "Vmfile no-op rebuild ≤ 1 s", "buildfile", n.BUILDFILE_NOOP, None, "<=", 1.0),
    Goal("volume-write", "virtio-fs volume, large-file write ≥ 50 % of the guest disk's throughput",
         "volume", n.volume("virtiofs", "write"), n.volume("guest disk (virtiofs VM)", "write"), ">=", 0.5),
    Goal("volume-read", "virtio-fs volume, large-file read ≥ 50 % of the guest disk's throughput",
         "volume", n.volume("virtiofs", "read"), n.volume("guest disk (virtiofs VM)", "read"), ">=", 0.5),
)


def evaluate(goal: Goal, data: dict | None, missing: str = "not run") -> Verdict:
    """The verdict on `goal` from the figures of its script (``figures.load``'s dict).

    `data` None means the script gave no figures; `missing` says why (failed, not run, no script
    yet). A figure or peer the script did not record, or a median it could not take (every run
    lost), makes the goal not measured, never met.
    """
    if data is None:
        return Verdict(goal, NOT_MEASURED, missing)
    by_name = data.get("by_name") or {f["name"]: f for f in data.get("figures", [])}
    for name in filter(None, (goal.figure, goal.peer)):
        if name not in by_name:
            return Verdict(goal, NOT_MEASURED, f"no figure “{name}” in this run")
    fig = by_name[goal.figure]
    if goal.peer is None:
        value, measured = fig.get("median"), show(fig.get("median"), fig["unit"])
    else:
        peer = by_name[goal.peer]
        value = ratio(fig, peer)
        measured = (f"{value:.2f}× ({show(fig.get('median'), fig['unit'])} / {show(peer.get('median'), peer['unit'])})"
                    if value is not None else "")
    if value is None:
        return Verdict(goal, NOT_MEASURED, "no median (every run lost)")
    met = value <= goal.limit if goal.op == "<=" else value >= goal.limit
    return Verdict(goal, MET if met else NOT_MET, measured)


def read_notes(path: Path) -> dict[str, str]:
    """Goal id -> the hand-written paragraph under its ``## <goal id>`` heading in GOALS-NOTES.md.

    Text before the first heading is the file's own preamble; a missing file gives no notes.
    Sections are returned stripped, so an empty one is "".
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    notes: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = notes.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return {gid: "\n".join(lines).strip() for gid, lines in notes.items()}
