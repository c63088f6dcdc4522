"""One stack VM's `CreateRequest`: the file's text values parsed the way ``vmctl run`` parses its
options, paths taken relative to the stack's directory, and its networks as the mode has them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from vmctl.core.create import CreateRequest
from vmctl.core.limits import parse_limits
from vmctl.core.plan import Segment
from vmctl.core.ports import parse_port
from vmctl.core.volumes import VolumeSpec, parse_volume
from vmctl.errors import UsageError
from vmctl.perms import volume_dir
from vmctl.stack.networks import hosts_digest, hosts_entries
from vmctl.stack.spec import StackSpec, VmSpec
from vmctl.stack.state import StackState
from vmctl.units import parse_size
from vmctl.userfiles import read_text

_LIMIT_FIELDS = {"cpu-shares": "cpu_shares", "cpu-quota": "cpu_quota_percent", "memory-limit": "memory_limit",
                 "io-weight": "io_weight", "io-read-bps": "io_read_bps", "io-write-bps": "io_write_bps"}


def _volume(text: str, spec: StackSpec, qemu: str | None) -> VolumeSpec:
    """A volume of the file: a named one (its directory made on first use), or a host path
    (relative ones from the stack's directory)."""
    v = parse_volume(text)
    if v.source in spec.volumes:
        source = str(volume_dir(spec.volume_dir(v.source), qemu))
    else:
        source = v.source if v.source.startswith("/") else str((spec.directory / v.source).resolve())
    return VolumeSpec(source, v.target, v.readonly)


def _keys(items: tuple[str, ...], directory: Path, where: str) -> tuple[str, ...]:
    """Key lines as given, or the lines of a ``.pub`` file (relative to the stack's directory)."""
    out = []
    for item in items:
        if item.startswith(("ssh-", "ecdsa-", "sk-")):
            out.append(item.strip())
            continue
        text = read_text(directory / item, f"{where} public key file").strip()
        if not text or "PRIVATE KEY" in text:
            raise UsageError(f"{where}: {item} is not a public key (give the .pub file)")
        out.extend(line.strip() for line in text.splitlines() if line.strip())
    return tuple(out)


def _user_data(vm: VmSpec, where: str) -> str | None:
    if vm.user_data_file is not None:
        return read_text(vm.user_data_file, f"{where} user-data file")
    return vm.user_data


def create_request(spec: StackSpec, st: StackState, short: str, image: str, definition: str,
                   qemu: str | None = None) -> CreateRequest:
    """The request that makes VM `short` of the stack from `image`; `definition` is recorded on it.
    Named volumes are made here, shared with QEMU's user `qemu`."""
    vm, vs, where = spec.vms[short], st.vms[short], f"{spec.file}: vms.{short}"
    segments, network, mac = [], None, None
    for n, (net, _) in enumerate(vm.networks):
        ns = st.networks[net]
        address = f"{vs.addresses[net]}/{ipaddress.ip_network(ns.subnet).prefixlen}"
        if st.mode == "hosted":
            segments.append((Segment(vs.macs[net], group=ns.group, port=ns.port), address))
        elif n == 0:
            network, mac = ns.libvirt, vs.macs[net]    # the primary NIC: its DHCP reservation
        else:
            segments.append((Segment(vs.macs[net], network=ns.libvirt), address))
    limits = parse_limits(**{_LIMIT_FIELDS[k]: v for k, v in vm.limits})
    return CreateRequest(
        name=spec.vm_name(short), image=image, cpus=vm.cpus,
        memory_bytes=parse_size(vm.memory, "memory", default_unit="m", maximum=16 << 40) if vm.memory else None,
        disk_bytes=parse_size(vm.disk, "disk size", default_unit="g", maximum=64 << 40) if vm.disk else None,
        ports=tuple(parse_port(p) for p in vm.ports),
        ssh_keys=_keys(vm.ssh_keys, spec.directory, where),
        user_data=_user_data(vm, where),
        network=network, mac=mac, profile=vm.profile, user=vm.user,
        volumes=tuple(_volume(v, spec, qemu) for v in vm.volumes),
        limits=limits,
        segments=tuple(segments),
        hosts=tuple(hosts_entries(spec, st, short)),
        stack=(("name", spec.name), ("vm", short), ("definition", definition), ("file", str(spec.file)),
               ("hosts", hosts_digest(hosts_entries(spec, st, short)))),
    )
