"""The bounds a guest's machine must sit within: one place, so an image's declared defaults and a
VM's plan are checked against the same numbers (an image whose defaults vmctl would refuse to
create is refused when it arrives)."""

from __future__ import annotations

MIN_MEMORY_MIB = 64               # below this no stock guest kernel boots
MAX_MEMORY_MIB = 16 << 20         # 16 TiB: anything larger is a typo
MAX_CPUS = 255                    # the vCPUs a machine without x2APIC/IOMMU setup can address
