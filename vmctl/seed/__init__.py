"""cloud-init NoCloud seeds: ``write_seed`` writes the ``cidata`` ISO a guest reads at boot.

``generate_host_key`` makes the guest's SSH host key on the host, so vmctl can pin it before the
guest ever boots.
"""

from vmctl.seed.hostkeys import HostKey, generate_host_key
from vmctl.seed.iso import read_iso
from vmctl.seed.writer import SEED_LABEL, seed_files, write_seed

__all__ = ["HostKey", "generate_host_key", "write_seed", "seed_files", "read_iso", "SEED_LABEL"]
