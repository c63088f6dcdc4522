"""The domain's identity and domain-wide settings: name, uuid, title, vmctl's metadata, the
accelerator, lifecycle actions and the security label."""

from __future__ import annotations

from vmctl.core.plan.inputs import DomainInputs
from vmctl.core.plan.network import forward_address
from vmctl.profiles import Profile
from vmctl.xml.domain import Domain


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    d.type = i.virt_type
    d.name = i.name
    d.uuid = i.uuid
    if i.genid:
        d.genid = i.genid
    d.title = f"vmctl instance {i.name}"
    d.description = f"Created by vmctl from {i.image_ref}; manage it with vmctl."
    meta = d.metadata
    meta.image_ref = i.image_ref
    meta.image_id = i.image_id
    meta.mode = i.mode
    meta.profile = i.profile
    meta.state = i.state
    if i.created:
        meta.created = i.created
    if i.user_net:
        meta.ssh_address = i.forward_address
        meta.ssh_port = i.ssh_host_port
        for fwd in i.ports:
            meta.add_port(fwd.proto, forward_address(i, fwd), fwd.host_port, fwd.guest_port)
    if i.record_json is not None:
        meta.record = i.record_json
    if i.ssh_host_key:
        meta.ssh_host_key = i.ssh_host_key.strip()
    m = p.machine
    d.on_poweroff = m.on_poweroff
    d.on_reboot = m.on_reboot
    d.on_crash = m.on_crash
    # libvirt's DAC driver would chown every file QEMU opens to QEMU's user while the VM runs:
    # the whole backing chain (image layers other VMs share, not always given back), the kernel
    # and initrd blobs. vmctl grants QEMU exactly the access it needs with ACLs instead (overlay
    # and seed: the instance's own; layers, kernel, initrd: read-only), so no relabelling at all.
    # QEMU still runs as the daemon's unprivileged user.
    # One exception: swtpm's socket must be given to QEMU's user, which only DAC labelling does.
    # A VM with a TPM gets dynamic DAC labels, and its disks say relabel='no' (see .disks), which
    # covers their backing chains: still no file of vmctl's is chowned.
    if i.tpm:
        d.seclabel_type = "dynamic"
        d.seclabel_model = "dac"
        d.seclabel_relabel = True
    else:
        d.seclabel_type = "none"
        d.seclabel_model = "dac"
