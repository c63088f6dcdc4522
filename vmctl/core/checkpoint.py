"""``vmctl commit --checkpoint``: a running VM becomes an image that carries its saved machine.

What is saved
    The VM's disk, as a layer on its image (as ``vmctl commit``), and its memory and device state
    at the same instant: QEMU's migration stream, as libvirt's ``virDomainSave`` writes it, cut
    into chunks of `CHUNK` bytes that enter the store as blobs (``application/vnd.vmctl.memory.v1``)
    and travel through registries and archives zstd-compressed, as disk layers do. The image
    config's ``checkpoint`` records the chunks and the machine's shape (machine type, CPUs,
    memory, accelerator, profile): a clone must have exactly that shape to take the state.

How
    1. The guest must be able to take a new identity when a clone of it wakes. vmctl's images run
       vmctl's agent (label ``org.vmctl.agent``; the VM needs the agent's virtio-serial port): it
       is armed over SSH while vmctl is connected to its port, waits on the port, and is saved
       waiting. A cloud image may instead run QEMU's guest agent allowing ``guest-exec``
       (`vmctl.guest.qga_identity`). Any other guest is refused: its clones could not change
       their host keys or address.
    2. SSH sessions are closed; the machine is saved (libvirt stops it, its disks flushed), the
       disk's new clusters become a layer, the chunks and the layer are published as one image.
    3. The VM is restored from the same file and told ``keep``: it goes on where it was, with its
       own identity, after a pause of a few seconds (the save, the commit and the restore).

Every clone is told its own identity before its link comes up (`vmctl.core.warm`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from vmctl.backend import saved, saveimage
from vmctl.core.instance import Instance
from vmctl.core.plan.devices import VMCTL_AGENT_CHANNEL
from vmctl.core.session import Session
from vmctl.core.states import guard
from vmctl.errors import GuestNotReady, IntegrityError, LibvirtError, UsageError, VmctlError
from vmctl.guest import qga_identity
from vmctl.guest.agent import AgentChannel
from vmctl.guest.keys import ensure_client_key
from vmctl.guest.ssh import GuestSession
from vmctl.core.warm import can_reidentify
from vmctl.storage.blobs import Blobs
from vmctl.storage.manifest import CHECKPOINT_FORMAT
from vmctl.storage.refs import parse_name
from vmctl.xml.domain import Domain

CHUNK = 64 << 20        # memory chunk size: what one registry blob, one resumable download holds
ARM_TIMEOUT = 20.0


def checkpoint(session: Session, name: str, ref: str | None, *, message: str = "", labels: dict | None = None):
    """Make image `ref` (None: untagged) from running VM `name`: its disk plus its saved machine;
    return the Image. The VM is running again, unchanged, when this returns (or, if its restore
    failed, stopped, with a warning saying so)."""
    if ref is not None:
        parse_name(ref)
    with guard(session, name, "checkpoint") as g:
        inst = g.instance
        parent = session.store.get(inst.record.image_id)
        _check_can_checkpoint(inst)
        agent_kind = _agent_kind(session, inst, parent)
        shape = {**_shape(session, inst), "agent": agent_kind}
        if agent_kind == "qga-1":
            return _save(session, inst, parent, ref, message, shape, labels or {})
        with AgentChannel(saved.ChannelStream(session.backend, name, VMCTL_AGENT_CHANNEL), name) as agent:
            session.progress(f"{name}: arming the guest agent", None)
            _arm(inst)
            agent.expect("armed", ARM_TIMEOUT)
            return _save(session, inst, parent, ref, message, shape, labels or {})


def _save(session: Session, inst: Instance, parent, ref, message: str, shape: dict, labels: dict):
    """Save the machine, publish the image, let the VM go on."""
    with session.store.session("checkpoint") as work:
        state = work.path / "machine.save"
        session.progress(f"{inst.name}: saving the machine", None)
        saved.save(session.backend, inst.name, os.fspath(state))
        try:
            return _publish(session, inst, parent, ref, message, state, work, shape, labels)
        finally:
            _go_on(session, inst, state, shape["agent"])


def _agent_kind(session: Session, inst: Instance, image) -> str:
    """How clones of this VM will take their identity: vmctl's agent (its images), or QEMU's
    guest agent (cloud images that run one, allowing guest-exec); UsageError when neither."""
    name = inst.name
    if can_reidentify(image):
        if not saved.has_channel(session.backend, name, VMCTL_AGENT_CHANNEL):
            raise UsageError(f"{name} was created without vmctl's agent channel (its image lacked the agent "
                             "then); create a new VM from the image and checkpoint that")
        return "vmctl-1"

    def call(command, arguments=None, timeout=10):
        return saved.guest_agent(session.backend, name, command, arguments, timeout=timeout)

    try:
        qga_identity.check_agent(call, name)
    except (LibvirtError, GuestNotReady) as exc:
        raise UsageError(f"{name}'s image {image.name} has no guest agent vmctl can use ({exc}): a clone of it "
                         "could not take a new identity (host keys, address), so it is not checkpointed; "
                         "commit it without --checkpoint") from None
    return "qga-1"


def _check_can_checkpoint(inst: Instance) -> None:
    rec = inst.record
    if rec.volumes:
        raise UsageError(f"{inst.name} shares host directories: their files are the host's, and a saved "
                         "machine would hold them open; checkpoint a VM without volumes")
    if rec.boot.get("tpm") or rec.boot.get("firmware") == "uefi":
        raise UsageError(f"{inst.name} has UEFI variables or a TPM, whose state a checkpoint does not carry")
    if rec.stack:
        raise UsageError(f"{inst.name} belongs to a stack; its private networks do not travel with an image")


def _shape(session: Session, inst: Instance) -> dict:
    """What a clone must be to take this machine's state (the config's ``checkpoint``)."""
    dom = Domain.from_xml(saved.live_xml(session.backend, inst.name))
    rec = inst.record
    return {
        "format": CHECKPOINT_FORMAT,
        "machine": dom.os.machine,        # libvirt's expansion of the profile's alias, e.g. pc-q35-7.2
        "domain_type": dom.type,
        "cpu_mode": dom.cpu.mode or "default",
        "cpus": rec.cpus,
        "memory_mib": rec.memory_mib,
        "profile": rec.profile,
        "firmware": rec.boot.get("firmware") or "bios",
        "network": rec.network.get("kind", "user"),
        "qemu": saved.qemu_version(session.backend),
    }


def _arm(inst: Instance) -> None:
    """Start the agent in the guest (over SSH) while vmctl is connected to its port."""
    host, port = inst.address()
    out, err = io.BytesIO(), io.BytesIO()
    with GuestSession(host, port, user=inst.record.ssh_user, client_key=ensure_client_key(inst.session.paths.keys),
                      host_key_line=inst.record.host_key) as guest:
        code = guest.run(["sh", "-c", "sync; exec /usr/lib/vmctl/agent.sh arm"], stdout=out, stderr=err)
    if code != 0:
        raise UsageError(f"{inst.name}: the guest agent could not be armed (exit {code}: "
                         f"{err.getvalue().decode('utf-8', 'replace').strip()[:200]})")


def _chunks(state: Path, work) -> list[tuple[Path, str, int]]:
    """Cut the migration stream out of libvirt's save file into staged, hashed chunks."""
    with open(state, "rb") as fh:
        head = fh.read(saveimage.MAX_DATA + saveimage.HEADER_SIZE)
        try:
            offset, _xml = saveimage.parse_header(head)
            saveimage.check_stream_start(head[offset:offset + 8])
        except saveimage.SaveImageError as exc:
            raise IntegrityError(f"libvirt's save file: {exc}") from None
        fh.seek(offset)
        out, i = [], 0
        while True:
            tmp = work.file(f"memory-{i:04d}")
            digest, size = Blobs.stream_temp(tmp, _Limited(fh, CHUNK))
            if size == 0:
                tmp.unlink()
                break
            out.append((tmp, digest, size))
            i += 1
        return out


class _Limited(io.RawIOBase):
    """At most `left` bytes of `fh`."""

    def __init__(self, fh, left: int):
        self.fh, self.left = fh, left

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(n) if n else b""
        self.left -= len(data)
        return data


def _publish(session: Session, inst: Instance, parent, ref: str | None, message: str, state: Path, work,
             shape: dict, extra_labels: dict):
    session.progress(f"{inst.name}: storing the machine and its disk", None)
    chunks = _chunks(state, work)
    labels = {"vmctl.commit.instance": inst.name, "vmctl.commit.checkpoint": "true", **extra_labels}
    return session.store.add_layer(
        parent.id, inst.disk, ref, message, created_by=f"vmctl commit --checkpoint {inst.name}",
        labels=labels, defaults={"cpus": shape["cpus"], "memory_mib": shape["memory_mib"]},
        memory=chunks, checkpoint=shape,
        progress=lambda phase, done, total: session.progress(f"checkpoint: {phase}", done / total if total else None),
    )


def _go_on(session: Session, inst: Instance, state: Path, agent: str) -> None:
    """Restore the VM from its save file and tell its agent to keep its identity."""
    session.progress(f"{inst.name}: resuming", None)
    try:
        saved.restore(session.backend, os.fspath(state), paused=False)
        if agent == "vmctl-1":
            with AgentChannel(saved.ChannelStream(session.backend, inst.name, VMCTL_AGENT_CHANNEL), inst.name) as agent:
                agent.send("keep")
                agent.expect("kept", 10)
    except (LibvirtError, VmctlError) as exc:
        session.warn(f"{inst.name} was saved but could not go on from the save ({exc}); "
                     f"'vmctl start {inst.name}' boots it")
