"""Names of the figures bench/goals.py judges, shared by the scripts that record them.

A goal finds its figure by exact name, so the script and the goal take the name from here; the
literal strings are the labels the scripts already print. Names built from an option (an image
size, a VM count) are functions. Standard library only: scripts import this as ``figure_names``.
"""

from __future__ import annotations

# --- instances_bench.py --------------------------------------------------------------------------


def vmctl_create(gib: int) -> str:
    return f"vmctl create, {gib} GiB image"


def virt_install_create(gib: int) -> str:
    """The user's whole job with virt-install: the qcow2 overlay, then ``virt-install --import``."""
    return f"overlay + virt-install --import, {gib} GiB image"


INSTANCES_RUN = "vmctl run, tiny (until SSH accepts the key)"
INSTANCES_PLAIN_BANNER = "plain qemu, tiny: SSH banner on hostfwd port"


def vmctl_ls(count: int) -> str:
    return f"vmctl ls -a, {count} VMs"


def virsh_list(count: int) -> str:
    return f"virsh list --all, {count} VMs"


# --- cloud_bench.py ------------------------------------------------------------------------------
CLOUD_RUN = "vmctl run (until SSH accepts the key)"
CLOUD_PLAIN = "plain qemu + cloud-localds (same test of SSH)"

# --- snapshot_bench.py ---------------------------------------------------------------------------
SNAPSHOT_CREATE_DISK = "create disk-only"
SNAPSHOT_REVERT_MEMORY = "revert memory"
SNAPSHOT_REVERT_DISK = "revert disk-only"
SNAPSHOT_COMMIT = "commit (layered)"
SNAPSHOT_CONVERT = "qemu-img convert (full)"

# --- registry_bench.py ---------------------------------------------------------------------------
REGISTRY_PUSH = "vmctl push"
REGISTRY_SKOPEO_PUSH = "skopeo push"
REGISTRY_PULL = "vmctl pull"
REGISTRY_SKOPEO_PULL = "skopeo pull"

# --- store_bench.py ------------------------------------------------------------------------------


def store_import(gib: int) -> str:
    return f"vmctl import, {gib} GiB"


def store_convert(gib: int) -> str:
    return f"qemu-img convert, {gib} GiB"


# --- stack_bench.py ------------------------------------------------------------------------------
STACK_UP = "up -d, two VMs (to SSH ready)"
STACK_SEQUENTIAL = "two sequential runs (to SSH ready)"

# --- buildfile_bench.py --------------------------------------------------------------------------
BUILDFILE_COLD = "cold build (--no-cache)"
BUILDFILE_NOOP = "no-op rebuild"
BUILDFILE_LAST_STEP = "last step changed"
BUILDFILE_BY_HAND = "by hand: run+exec+cp+commit+rm (one layer)"

# --- volume_bench.py -----------------------------------------------------------------------------
VOLUME_MEASURES = {"write": "large write", "read": "large read", "small": "small files"}


def volume(where: str, measure: str) -> str:
    """`where` is the script's row label (``virtiofs``, ``guest disk (virtiofs VM)``, ``host``...),
    `measure` one of VOLUME_MEASURES' keys."""
    return f"{where}: {VOLUME_MEASURES[measure]}"


# --- no script measures these yet (goals.py says so in BENCHMARKS.md) -----------------------------
CLI_HELP = "vmctl --help"
DENSITY_PSS = "QEMU PSS per idle VM"
LIFECYCLE_STOP = "guest power-off to vmctl stop returning"
LIFECYCLE_UPTIME = "tiny guest's uptime at SSH ready (read by the next exec)"
CHAIN_READ_1 = "read through 1 layer"
CHAIN_READ_10 = "read through 10 layers"


# warm_bench.py
WARM_RUN = "vmctl run of a checkpoint image, tiny, warm (until SSH accepts the key)"
WARM_COLD_RUN = "vmctl run --cold of the same image (a boot)"
WARM_LIBVIRT_RESTORE = "virsh restore of a save of the same VM, to its SSH banner (no new identity)"
WARM_PLAIN_BANNER = "plain qemu boot, tiny: SSH banner on hostfwd port (warm bench's peer)"
WARM_CHECKPOINT = "vmctl commit --checkpoint of a running tiny VM"
WARM_SIZE_DISK = "checkpoint memory on disk (the store's chunks)"
WARM_SIZE_REGISTRY = "checkpoint memory in the registry (zstd)"


CLOUD_WARM_RUN = "vmctl run of a checkpoint of the cloud guest (warm start, qemu-guest-agent)"


def warm_density(count: int) -> str:
    return f"QEMU PSS per idle warm clone, {count} clones (dense profile)"


# fleet_bench.py
FLEET_IMAGE_BYTES = "tiny image, all its content (what a host that lacks it is sent)"
FLEET_RUN_SENT = "vmctl --host h1 run, image not on h1 (layers sent), until SSH accepts the key"
FLEET_RUN_THERE = "vmctl --host h1 run, image's layers on h1 already, until SSH accepts the key"
FLEET_LS_ALL = "vmctl ls --all-hosts -a (2 hosts)"
FLEET_MIGRATE = "vmctl migrate --live of a running tiny VM between two hosts (top layer over NBD)"
FLEET_VIRSH_MIGRATE = "the same move by hand: virsh vol-create-as + vol-upload seed + virsh migrate --live --copy-storage-inc"
FLEET_EXEC_DIRECT = "vmctl --host h1 exec VM -- true, the guest reached at its own address"
FLEET_EXEC_JUMP = "vmctl --host h1 exec VM -- true, through h1's sshd (host add --jump)"
FLEET_SSH_JUMP = "the same by hand: OpenSSH ssh -J through h1's sshd (vmctl ssh --print-command), true"
FLEET_SNAPSHOT = "vmctl --host h1 snapshot create of a running VM (memory and disk, internal) + rm"
FLEET_VIRSH_SNAPSHOT = "the same by hand: virsh snapshot-create-as + snapshot-delete"
