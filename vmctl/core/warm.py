"""Warm starts: a VM made from a checkpoint image starts where the checkpoint was saved, each
clone with its own identity (`vmctl.core.checkpoint` makes such images). A foundation of the
core, as `vmctl.core.volumes` is: ``run`` and ``start`` both start a VM through `start_fresh`.

When
    `plan_warm` decides at create time: the clone must have the checkpoint's shape (its machine
    type, CPUs, memory, accelerator, profile, network kind) and nothing a boot would have to apply
    (volumes, user-data, a TPM, UEFI, a stack's NICs). Otherwise, or with ``--cold``, the VM boots
    like any other — the image's disk is a normal disk — and vmctl says why. At the first start,
    `start_fresh` restores; if QEMU or libvirt cannot take the state here (another QEMU, another
    CPU), the VM boots instead, said plainly. Later starts always boot (a stopped VM has no memory).

Identity, before anything can reach the clone
    1. A save file is written for the clone: libvirt's header with the clone's own domain XML
       (its UUID, name, MAC, disks, forwarded ports, a new VM generation ID) in front of the
       checkpoint's migration stream (`vmctl.backend.saveimage`), and restored **paused**.
    2. Every NIC's link is set down; vmctl connects to the agent's port; the guest resumes. The
       new generation ID makes the guest kernel reseed its random pool as it resumes (Linux's
       vmgenid driver); the agent mixes in 32 bytes from the host as well.
    3. The agent is told the clone's hostname, instance id, SSH host key (the one vmctl pinned,
       generated for this clone), authorised keys, MAC address, machine-id and the time; it
       applies them, restarts the SSH server (every session of the checkpoint is gone) and says
       ``applied``. Only then do the links come up; the agent renews its DHCP lease with the new
       MAC and prints the ready line. Readiness is then proven as for a booted VM: SSH with the
       pinned key.
    A failure after the restore powers the clone off before it is reachable, then boots it.

What is left of the checkpoint in a clone: its processes, page cache and kernel state, as saved.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from vmctl.backend import saved, saveimage
from vmctl.core.instance import Instance
from vmctl.core.limits import without_io_weight_if_refused
from vmctl.core.plan.devices import VMCTL_AGENT_CHANNEL
from vmctl.core.session import Session
from vmctl.errors import GuestNotReady, LibvirtError, VmctlError
from vmctl.guest import qga_identity
from vmctl.guest.agent import AgentChannel, Identity
from vmctl.seed.hostkeys import HostKey
from vmctl.xml.domain import Domain

AGENT_LABEL = "org.vmctl.agent"     # image label: the guest runs vmctl's agent (value: its protocol)
WARM_KEYS = "warm-identity.json"   # in the instance dir until the first start: the clone's secrets
RESTORE_FILE = "restore.save"      # in the instance dir while libvirt restores from it
APPLY_TIMEOUT = 20.0


@dataclass(frozen=True)
class WarmPlan:
    """The create-time decision: restore (`reason` None) or boot (`reason` says why)."""

    checkpoint: dict | None
    reason: str | None

    @property
    def warm(self) -> bool:
        return self.checkpoint is not None and self.reason is None


def plan_warm(image, request, *, profile: str, virt_type: str, network_kind: str, cpus: int | None,
              memory_mib: int | None, on_host: bool = False) -> WarmPlan:
    """May a VM of `request` from `image` start from its checkpoint? (cpus/memory: what the user
    asked for, None when they did not.)"""
    cp = image.checkpoint
    if cp is None:
        return WarmPlan(None, None)
    if request.cold:
        return WarmPlan(cp, "--cold")
    wants = [
        (cpus is not None and cpus != cp["cpus"], f"--cpus {cpus}: the checkpoint was saved with {cp['cpus']}"),
        (memory_mib is not None and memory_mib != cp["memory_mib"],
         f"--memory {memory_mib} MiB: the checkpoint was saved with {cp['memory_mib']} MiB"),
        (profile != cp["profile"], f"profile {profile}: the checkpoint was saved with profile {cp['profile']}"),
        (virt_type != cp["domain_type"],
         f"this host runs {'KVM' if virt_type == 'kvm' else 'TCG'}; the checkpoint was saved under "
         f"{'KVM' if cp['domain_type'] == 'kvm' else 'TCG'}"),
        (network_kind != cp.get("network", "user"),
         f"a {network_kind} NIC: the checkpoint was saved with a {cp.get('network', 'user')} one"),
        (bool(request.volumes), "volumes are mounted at boot"),
        (request.user_data is not None, "--user-data runs at boot"),
        (request.tpm, "--tpm"),
        (request.firmware == "uefi", "UEFI"),
        (bool(request.segments), "a stack's private networks"),
        (request.max_cpus is not None and request.max_cpus != cp["cpus"], "--max-cpus changes the machine"),
        # the restore writes a save file with the clone's identity next to the VM: on this machine only
        (on_host, "warm starts run on this machine's store, not on a vmctl host"),
    ]
    for bad, why in wants:
        if bad:
            return WarmPlan(cp, why)
    return WarmPlan(cp, None)


def can_reidentify(image) -> bool:
    """True when `image`'s guest runs vmctl's agent, so that clones of a checkpoint of it can take
    new identities (and its VMs get the agent's port). Cloud images may instead re-identify through
    their qemu-guest-agent, which `vmctl.core.checkpoint` asks the running VM about."""
    return image.labels.get(AGENT_LABEL) == "vmctl-1"


def hostname_of(name: str) -> str:
    """A host name for VM `name` (what the seed would set, cut to what a host name may hold)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", name).strip(".-")[:63] or "vmctl"


def save_identity(directory: Path, host_key: HostKey, authorized_keys: list[str]) -> None:
    """Keep the clone's host key and authorised keys for its first start (0600, removed then)."""
    data = {"host_key": {"private": host_key.private_openssh, "public": host_key.public},
            "authorized_keys": list(authorized_keys)}
    fd = os.open(directory / WARM_KEYS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)


def start_fresh(session: Session, inst: Instance, *, boot) -> str:
    """Start `inst`: restore its checkpoint when its record says one is pending, else `boot()`.
    Returns "warm" or "cold"; the record says which, and why cold."""
    rec = inst.record
    if not rec.warm.get("pending"):
        boot()
        return "cold"
    try:
        _restore(session, inst)
        outcome, reason = "warm", None
    except (LibvirtError, GuestNotReady, saveimage.SaveImageError, OSError) as exc:
        reason = " ".join(str(exc).split())[:300]   # one line, whatever libvirt or QEMU said
        session.warn(f"{inst.name}: the checkpoint cannot be restored here ({reason}); booting it instead")
        _power_off(session, inst.name)
        boot()
        outcome = "cold"
    finally:
        (inst.directory / WARM_KEYS).unlink(missing_ok=True)
    rec.warm = {"checkpoint": rec.warm.get("checkpoint"), "started": outcome, **({"reason": reason} if reason else {})}
    inst.record = rec
    inst.save_record(live=True)
    return outcome


def _power_off(session: Session, name: str) -> None:
    try:
        if session.backend.state(name).state in ("running", "paused"):
            session.backend.destroy(name)
    except VmctlError:
        pass


def _restore(session: Session, inst: Instance) -> None:
    backend, store = session.backend, session.store
    image = store.get(inst.record.image_id)
    if image.checkpoint is None or not image.memory:
        raise saveimage.SaveImageError("the image no longer carries a checkpoint")
    with open(inst.directory / WARM_KEYS) as fh:
        secrets = json.load(fh)
    path = inst.directory / RESTORE_FILE
    session.progress(f"{inst.name}: restoring the checkpoint", None)
    def restore() -> None:   # the save file carries the definition as it is now
        path.unlink(missing_ok=True)   # a first try's (it is made with O_EXCL)
        _write_save_file(path, saved.inactive_xml(backend, inst.name), image.memory)
        saved.restore(backend, os.fspath(path), paused=True)

    try:
        without_io_weight_if_refused(session, inst.name, inst.record.limits, restore)
    finally:
        path.unlink(missing_ok=True)   # QEMU has read it all (or failed): nothing half-made stays
    try:
        saved.set_links(backend, inst.name, up=False)
        if image.checkpoint["agent"] == "qga-1":
            _reidentify_with_qga(session, inst, secrets)
            return
        if not saved.has_channel(backend, inst.name, VMCTL_AGENT_CHANNEL):
            raise GuestNotReady("the restored machine has no agent channel")
        with AgentChannel(saved.ChannelStream(backend, inst.name, VMCTL_AGENT_CHANNEL), inst.name) as agent:
            backend.resume(inst.name)
            # SSH readiness comes next and its modules (paramiko, cryptography) take ~0.2 s to
            # import: load them while the guest works, the wait below is only I/O
            threading.Thread(target=importlib.import_module, args=("vmctl.guest.ready",), daemon=True).start()
            agent.send(*_identity(inst, secrets).lines())
            agent.expect("applied", APPLY_TIMEOUT)
            saved.set_links(backend, inst.name, up=True)
            # user-mode networking: QEMU's DHCP server came with the checkpoint and leases the
            # address the forwards point at to the checkpoint's MAC; the clone keeps that address
            agent.send("network keep" if inst.record.network.get("kind", "user") == "user" else "network renew")
            agent.expect("ready", APPLY_TIMEOUT)
    except BaseException:
        _power_off(session, inst.name)   # never leave a clone running with the checkpoint's identity
        raise


def _reidentify_with_qga(session: Session, inst: Instance, secrets: dict) -> None:
    """A cloud guest's identity through its qemu-guest-agent (link down), then the link up."""
    backend = session.backend
    backend.resume(inst.name)

    def call(command, arguments=None, timeout=10):
        return saved.guest_agent(backend, inst.name, command, arguments, timeout=timeout)

    _wait_for_qga(call, inst.name)
    qga_identity.apply_identity(call, inst.name, _identity(inst, secrets), inst.record.ssh_user)
    saved.set_links(backend, inst.name, up=True)
    if inst.record.network.get("kind", "user") != "user":
        qga_identity.renew_lease(call, inst.name)


def _wait_for_qga(call, vm: str, timeout: float = 30.0) -> None:
    """libvirt reconnects to the guest agent after the restore; the first commands may fail."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call("guest-ping", None, timeout=5)
            return
        except LibvirtError as exc:
            if time.monotonic() > deadline:
                raise GuestNotReady(f"{vm}: its guest agent does not answer after the restore ({exc})") from None
            time.sleep(0.2)


def _write_save_file(path: Path, domain_xml: str, chunks: tuple[Path, ...]) -> None:
    """libvirt's save file for this clone: its header, then the checkpoint's chunks as they are."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(saveimage.build_header(domain_xml))
        out.flush()
        for i, chunk in enumerate(chunks):
            with open(chunk, "rb", buffering=0) as src:
                if i == 0:
                    saveimage.check_stream_start(os.pread(src.fileno(), 8, 0))
                _copy(src.fileno(), out.fileno())


def _copy(src: int, out: int) -> None:
    """Append file `src` to `out` (descriptors): in the kernel where it can (the stream never
    passes through Python), else through a buffer."""
    size = os.fstat(src).st_size
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src, out, size - done, done)
            if n == 0:
                raise OSError("a memory chunk shrank while it was copied")
            done += n
    except OSError as exc:
        if done or exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        while done < size:
            data = os.pread(src, min(1 << 20, size - done), done)
            if not data:
                raise OSError("a memory chunk shrank while it was copied") from None
            os.write(out, data)
            done += len(data)


def _identity(inst: Instance, secrets: dict) -> Identity:
    rec = inst.record
    key = HostKey(secrets["host_key"]["private"], secrets["host_key"]["public"])
    return Identity(
        hostname=hostname_of(inst.name), instance_id=rec.uuid, host_key=key,
        authorized_keys=tuple(secrets["authorized_keys"]), mac=_mac(inst), machine_id=uuidlib.uuid4().hex,
        random=os.urandom(32), now=time.time(),
    )


def _mac(inst: Instance) -> str:
    """The primary NIC's MAC in the clone's domain: a libvirt interface's, or the one on the QEMU
    command line of user-mode networking."""
    dom = Domain.from_xml(saved.inactive_xml(inst.session.backend, inst.name))
    for nic in dom.devices.interfaces:
        if nic.mac:
            return nic.mac
    for arg in dom.qemu_commandline.args:
        m = re.search(r"(?:^|,)mac=([0-9a-f:]{17})(?:,|$)", arg)
        if m:
            return m.group(1)
    raise GuestNotReady(f"{inst.name}: cannot find its MAC address")
