"""vmctl: Docker's workflow for KVM/QEMU virtual machines, on libvirt."""

__version__ = "0.1.0"
