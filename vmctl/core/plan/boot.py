"""Boot: the machine type, firmware (BIOS, or UEFI through libvirt's firmware autoselection) or a
direct kernel boot, and the platform features (ACPI for the power button, APIC, vmport)."""

from __future__ import annotations

from vmctl.core.plan.inputs import DomainInputs
from vmctl.profiles import Profile
from vmctl.xml.domain import Domain


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    m = p.machine
    os_ = d.os
    os_.os_type = "hvm"
    os_.arch = m.arch
    os_.machine = i.machine or m.machine
    if i.boot_kind == "firmware" and i.firmware == "uefi":
        os_.firmware = "efi"
        # libvirt's autoselection prefers the secure-boot builds (they need SMM, slow under TCG):
        # say which one is wanted.
        os_.firmware_feature("enrolled-keys", i.secure_boot)
        os_.firmware_feature("secure-boot", i.secure_boot)
        if i.secure_boot:
            os_.loader_secure = True
    if i.boot_kind == "kernel":
        os_.kernel = i.kernel
        if i.initrd:
            os_.initrd = i.initrd
        os_.cmdline = i.cmdline or ""
    f = d.features
    f.acpi = m.features_acpi
    f.apic = m.features_apic
    if m.vmport is not None:
        f.vmport = m.vmport
    if i.secure_boot:
        f.smm = True
    if i.virt_type == "qemu" and m.tcg_tb_cache_mib:
        f.tcg_tb_cache = m.tcg_tb_cache_mib
        f.tcg_tb_cache_unit = "MiB"
