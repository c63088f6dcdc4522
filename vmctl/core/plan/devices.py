"""Other devices: the guest agent channel, an emulated TPM when asked, graphics (VNC on 127.0.0.1 only), USB (none unless the
profile asks), the memory balloon with statistics, and a rate-limited RNG from the host."""

from __future__ import annotations

from vmctl.core.plan.inputs import DomainInputs
from vmctl.core.ports import LOOPBACK
from vmctl.profiles import Profile
from vmctl.xml.domain import RNG, TPM, Channel, Controller, Domain, Graphics, Video

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
#: The port of vmctl's own guest agent (templates/guest/.../agent.sh): how a warm-started clone
#: learns its identity (vmctl.guest.agent).
VMCTL_AGENT_CHANNEL = "org.vmctl.agent.0"


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    devices = d.devices
    if p.devices.guest_agent:
        channel = Channel()
        channel.type = "unix"
        channel.target_type = "virtio"
        channel.target_name = GUEST_AGENT_CHANNEL
        devices.add(channel)
    if i.agent_channel:
        channel = Channel()
        channel.type = "unix"
        channel.target_type = "virtio"
        channel.target_name = VMCTL_AGENT_CHANNEL
        devices.add(channel)
    if i.tpm:
        tpm = TPM()
        tpm.model = "tpm-crb"
        tpm.backend_type = "emulator"
        tpm.backend_version = "2.0"
        devices.add(tpm)
    if p.devices.graphics == "vnc":
        gfx = Graphics()
        gfx.type = "vnc"
        gfx.port = -1
        gfx.autoport = True
        gfx.listen = LOOPBACK
        gfx.listen_type = "address"
        gfx.listen_address = LOOPBACK
        devices.add(gfx)
        video = Video()
        video.model_type = p.devices.video
        devices.add(video)
    if not p.devices.usb:
        # A server guest has no use for USB; without it the guest kernel probes one controller
        # less at boot (noticeable under TCG) and QEMU exposes less emulated hardware.
        usb = Controller()
        usb.type = "usb"
        usb.model = "none"
        devices.add(usb)
    balloon = devices.memballoon
    balloon.model = "virtio" if p.devices.balloon else "none"
    if p.devices.balloon and p.devices.free_page_reporting:
        balloon.free_page_reporting = True
    if p.devices.balloon and p.devices.balloon_stats_period:
        balloon.stats_period = p.devices.balloon_stats_period
    if p.devices.rng:
        rng = RNG()
        rng.model = "virtio"
        if p.devices.rng_rate_bytes is not None:
            rng.rate_bytes = p.devices.rng_rate_bytes
            rng.rate_period = p.devices.rng_rate_period
        rng.backend_model = "random"
        rng.backend_device = p.devices.rng
        devices.add(rng)
