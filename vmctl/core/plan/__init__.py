"""From resolved inputs and a machine profile to a domain model: small builders, no I/O.

`plan_domain(profile, inputs)` validates the inputs once (:mod:`.inputs`), then lets each section's
builder set its part of the domain, with its own defaults, in a fixed order (so the XML is
deterministic; the golden-file tests pin it down):

- :mod:`.identity`: name, uuid, vmctl's metadata, accelerator, lifecycle actions, security label;
- :mod:`.tuning`: cgroup limits (I/O weight, memory hard limit, CPU shares and quota);
- :mod:`.cpu`: vCPUs, memory, CPU model, clock;
- :mod:`.boot`: machine, firmware or direct kernel boot, platform features;
- :mod:`.disks`: the overlay and the cloud-init seed;
- :mod:`.volumes`: shared host directories (virtio-fs or 9p) and the shared memory virtio-fs needs;
- :mod:`.network`: user-mode networking (passt or QEMU's slirp) or a libvirt network / bridge;
- :mod:`.console`: the logged serial console;
- :mod:`.devices`: guest agent channel, graphics, USB, balloon, RNG.

:mod:`.edits` changes a defined domain's XML (moving the SSH forward, marking it created).
"""

from __future__ import annotations

from vmctl.core.plan import boot, console, cpu, devices, disks, identity, network, tuning, volumes
from vmctl.core.plan.edits import move_ssh_port
from vmctl.core.plan.inputs import DomainInputs, Segment, mac_from_uuid, validate
from vmctl.core.plan.network import user_netdev_args
from vmctl.profiles import Profile
from vmctl.xml.domain import Domain

__all__ = ["DomainInputs", "Segment", "mac_from_uuid", "move_ssh_port", "plan_domain",
           "user_netdev_args"]

# The order of the sections is the order of the XML the golden files pin down.
_SECTIONS = (identity, tuning, cpu, boot, disks, volumes, network, console, devices)


def plan_domain(profile: Profile, inputs: DomainInputs) -> Domain:
    """Build the domain model for `inputs` on `profile` (pure; raises UsageError on bad input)."""
    validate(inputs)
    d = Domain(qemu_namespace=inputs.user_net and not inputs.use_passt)
    d.devices.ensure()
    for section in _SECTIONS:
        section.apply(d, profile, inputs)
    return d
