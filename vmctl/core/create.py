"""Creating a VM, and ``run`` (create, start, wait) as one transaction.

`plan` resolves everything a definition needs — profile, image, accelerator, network, ports, paths,
a fresh SSH host key — and builds the domain model, touching nothing; ``create --print-xml`` stops
there. `create` then takes the name lock and makes the files under a temporary directory, renames it
into place, defines the domain with validation and records the instance; any failure undoes every
step in reverse, so nothing half-made is left behind. `run` does the same and starts the VM under
the same lock and transaction (a VM that cannot start is not left behind), then waits for SSH.

Progress (creating the disk, writing the seed, defining, starting, waiting for SSH) goes to the
session's progress sink.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid as uuidlib
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from vmctl import faults
from vmctl.backend.kvm_probe import probe_kvm
from vmctl.core.hostplace import HostPlace
from vmctl.core.hostports import pick_free_port, port_free
from vmctl.core.ports import LOOPBACK, PortForward
from vmctl.core.instance import Instance
from vmctl.core.limits import Limits, apply_after_start, start_domain
from vmctl.core.namelock import name_lock
from vmctl.core.plan import DomainInputs, mac_from_uuid, plan_domain
from vmctl.core.records import CREATING_MARK, DISK, SEED, SERIAL_LOG, InstanceRecord, list_records
from vmctl.core.session import Session
from vmctl.core.transaction import Transaction
from vmctl.core.volumes import VolumeMount, VolumeSpec, boot_commands, ensure_binds, plan_mounts, resolve_specs
from vmctl.hostmount import can_bind, release_under
from vmctl.errors import ConflictError, ResourceError, UsageError, VmctlError
from vmctl.guest.keys import ensure_client_key
from vmctl.names import check_name
from vmctl.perms import private_dir, qemu_readable, qemu_user, require_path_search, require_shared_dir
from vmctl.profiles import load_profile
from vmctl.seed.hostkeys import generate_host_key
from vmctl.core.warm import can_reidentify, plan_warm, save_identity, start_fresh
from vmctl.seed.netconfig import StaticAddress, address_command, hosts_command, parse_static
from vmctl.seed.writer import write_seed
from vmctl.storage.manifest import check_user
from vmctl.storage import qemu_img
from vmctl.storage.refs import looks_like_path
from vmctl.units import mib

VOLUMES_DIR = "volumes"   # the read-only bind mounts of a VM's read-only virtio-fs volumes
DEFAULT_LOGIN = "vmctl"  # the user vmctl's seed makes on an image that names none
CREATE_SPACE = 16 << 20  # the seed, the record and the overlay's first clusters, with room to boot


@dataclass(frozen=True)
class CreateRequest:
    """What the user asked for; None means "the image's or profile's default"."""
    name: str
    image: str
    cpus: int | None = None
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    ports: tuple = ()
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None
    network: str | None = None
    bridge: str | None = None
    profile: str | None = None
    restrict: bool | None = None
    uuid: str | None = None
    ssh_port: int | None = None
    user: str | None = None              # the login user (default: the image's, else vmctl's own)
    firmware: str | None = None          # bios | uefi, among what the image supports
    secure_boot: bool = False
    tpm: bool = False
    ip: str | None = None                # static ADDRESS/PREFIX (libvirt network or bridge)
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    volumes: tuple[VolumeSpec, ...] = ()   # -v / --mount, not yet checked
    limits: Limits = Limits()              # --cpu-shares, --cpu-quota, --memory-limit, --io-*
    max_cpus: int | None = None            # --max-cpus: vCPU hotplug up to this
    # A stack's VM (vmctl.stack): NICs on its private networks as (Segment, "ADDR/PREFIX" the seed
    # sets, or None when the network's DHCP gives it), the /etc/hosts entries the seed writes at
    # every boot, the primary NIC's MAC (a DHCP reservation names it) and the stack's labels.
    segments: tuple = ()
    hosts: tuple[str, ...] = ()
    mac: str | None = None
    stack: tuple[tuple[str, str], ...] = ()
    cold: bool = False   # boot even an image with a checkpoint (vmctl.core.warm)


@dataclass
class CreatePlan:
    """Every decision of a create, and the domain it leads to."""
    record: InstanceRecord
    directory: Path
    image: object
    host_key: object
    authorized_keys: list[str]
    user_data: str | None
    domain: object                       # vmctl.xml.domain.Domain
    disk_bytes: int | None
    seed: bool
    static: StaticAddress | None = None
    volumes: tuple[VolumeMount, ...] = ()
    bootcmd: tuple = ()                  # the seed's every-boot commands (volumes, stack networks)

    @property
    def xml(self) -> str:
        return self.domain.to_xml()


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _virt_type(session: Session, profile) -> str:
    """KVM only when the profile wants it and, unless the settings decide, the probe verified it
    really runs a guest. On a vmctl host the host's `accelerator` decides ("auto": KVM where its
    libvirt offers it; vmctl's probe boots a guest on this machine only)."""
    if profile.virt_type == "qemu" or session.settings.accelerator == "tcg":
        return "qemu"
    if session.host is not None:
        if session.host.accelerator != "auto":
            return "kvm" if session.host.accelerator == "kvm" else "qemu"
        return "kvm" if session.backend.supports_kvm() else "qemu"
    if session.settings.accelerator == "kvm":
        return "kvm"

    return "kvm" if probe_kvm().usable else "qemu"


def _exposed_forwards(exposed: list[dict], taken: set[int], pick) -> tuple[PortForward, ...]:
    """Forwards for the ports an image EXPOSEs, when `run` names none (``-p`` replaces them):
    the same host port on 127.0.0.1 when it is free, another free one when it is not."""
    out = []
    for e in exposed:
        host = e["port"] if e["port"] >= 1024 and e["port"] not in taken and port_free(e["port"]) \
            else pick(taken)
        taken = taken | {host}
        out.append(PortForward(host, e["port"], e["proto"]))
    return tuple(out)


def _supported(choice: str, yes: str, probe) -> bool:
    """A setting's explicit choice (`yes` or another), else -- on "auto" -- what the daemon says
    (False when it cannot say)."""
    if choice != "auto":
        return choice == yes
    try:
        return probe()
    except VmctlError:
        return False


def _virtiofs_supported(session: Session) -> bool:
    return _supported(session.settings.volume_transport, "virtiofs", lambda: session.backend.supports_virtiofs())


def _volumes(session: Session, request: CreateRequest, seed: bool) -> tuple[VolumeMount, ...]:
    if not request.volumes:
        return ()
    if session.host is not None:
        raise UsageError(f"volumes share this machine's directories: not with a VM on host {session.host.name}")
    specs = resolve_specs(request.volumes, session.settings.root)
    if not seed:
        raise UsageError("volumes are mounted by the VM's cloud-init seed, and this image reads none")
    virtiofs = _virtiofs_supported(session)
    binds = None
    if virtiofs and can_bind() and not session.backend.is_remote():
        binds = session.settings.paths.instance_dir(request.name) / VOLUMES_DIR
    return plan_mounts(specs, virtiofs, binds)


def _passt_supported(session: Session) -> bool:
    # the connection opens only when the daemon must be asked (a host's print-xml may not reach it)
    return _supported(session.settings.user_network, "passt", lambda: session.backend.supports_passt())


def _network(request: CreateRequest, profile, ssh_port: int | None) -> dict:
    if request.bridge:
        return {"kind": "bridge", "name": request.bridge}
    if request.network:
        return {"kind": "network", "name": request.network}  # checked with the rest of the plan
    kind = profile.network_kind
    if kind == "user":
        return {"kind": "user", "ssh_port": ssh_port}
    return {"kind": kind, "name": profile.network_name}


@dataclass(frozen=True)
class _DiskFileImage:
    """A disk file named directly with ``--image PATH``: good for ``--print-xml`` only.

    A real VM needs an image in the store (so its base stays read-only and accounted for).
    """

    path: Path
    checkpoint = None   # a plain disk: no saved machine, no agent
    labels = {}

    @property
    def id(self) -> str:
        return f"file:{self.path}"

    config = {"boot": {"kind": "firmware", "firmware": "bios", "supports": ["bios", "uefi"]},
              "cloud_init": True, "defaults": {}}
    kernel = None
    initrd = None

    @property
    def top_layer(self) -> Path:
        return self.path


def _resolve_image(session: Session, ref: str, *, print_only: bool):

    if looks_like_path(ref) and Path(ref).is_file():
        if not print_only:
            raise UsageError(f"{ref} is a file, not an image: import it first with 'vmctl image import {ref} NAME'")
        return _DiskFileImage(Path(ref).absolute())
    return session.store.resolve(ref)


def login_user(asked: str | None, config: dict, *, seed: bool) -> str:
    """Who vmctl logs in as (README, "Cloud images"): ``--user``, else the image's ``user``, else
    -- on an image that reads a seed -- ``vmctl``, a user vmctl's seed makes; root only when
    one of those says so (cloud-init disables root, so an unknown image is never assumed to
    let root in), or on an image without a seed."""
    login = asked or config.get("user") or (DEFAULT_LOGIN if seed else "root")
    check_user(login)
    if asked and asked != "root" and not seed:
        raise UsageError(f"--user {asked}: this image reads no cloud-init seed, so vmctl cannot make "
                         "that user in it")
    return login


def _firmware(boot: dict, request: CreateRequest) -> str:
    chosen = boot.get("firmware", "bios")
    if request.firmware is None:
        return chosen
    if boot.get("kind") == "kernel":
        raise UsageError("--firmware: this image boots its kernel directly, without firmware")
    supports = boot.get("supports", [chosen])
    if request.firmware not in supports:
        raise UsageError(f"--firmware {request.firmware}: the image boots only with {' or '.join(supports)}")
    return request.firmware


def _static_address(request: CreateRequest, network: dict, seed: bool, vm_uuid: str) -> StaticAddress | None:
    if request.ip is None:
        if request.gateway or request.dns:
            raise UsageError("--gateway and --dns go with --ip")
        return None
    if network["kind"] == "user":
        raise UsageError("--ip needs a libvirt network or bridge (system mode); a hosted VM is reached "
                         "through its forwarded ports")
    if not seed:
        raise UsageError("--ip: this image reads no cloud-init seed, so its address cannot be set")
    return parse_static(mac_from_uuid(vm_uuid), request.ip, request.gateway, tuple(request.dns))


def _boot_commands(request: CreateRequest, name: str, mounts: tuple[VolumeMount, ...], seed: bool,
                   static: StaticAddress | None = None) -> tuple:
    """The seed's every-boot commands: the volumes' mounts, a stack VM's addresses and hosts, and
    the ``--ip`` address of a guest whose init reads no network-config (`static`)."""
    commands = list(boot_commands(mounts))
    if static is not None:
        commands.append(address_command(static.mac, static.address))
    for seg, address in request.segments:
        if address:
            commands.append(address_command(seg.mac, address))
    if request.hosts:
        commands.append(hosts_command(name, list(request.hosts)))
    if commands and not seed:
        raise UsageError("volumes and stack networks are set up by the VM's cloud-init seed, and this image reads none")
    return tuple(commands)


def plan(session: Session, request: CreateRequest, *, print_only: bool = False) -> CreatePlan:
    """Decide everything about a new VM and build its domain; writes nothing."""
    settings = session.settings
    name = check_name(request.name, "VM name")
    if request.network and request.bridge:
        raise UsageError("--network and --bridge exclude each other")
    profile = load_profile(request.profile or settings.profile)
    image = _resolve_image(session, request.image, print_only=print_only)
    config = image.config
    defaults = config.get("defaults", {})
    # what the user gave is checked, never replaced: --cpus 0 is refused, not the default
    cpus = request.cpus if request.cpus is not None else (defaults.get("cpus") or profile.cpus)
    memory_mib = (mib(request.memory_bytes) if request.memory_bytes is not None
                  else (defaults.get("memory_mib") or profile.memory_mib))
    if request.disk_bytes is not None:

        virtual = int(qemu_img.info(image.top_layer, "qcow2", force_share=True)["virtual-size"])
        if request.disk_bytes < virtual:
            raise UsageError(f"--disk must be at least the image's size ({virtual} bytes): disks only grow")
    host = session.host
    place = HostPlace(session) if host else None
    directory = Path(place.instances_dir) if place else settings.paths.instance_dir(name)
    user_mode = not (request.bridge or request.network) and profile.network_kind == "user"
    ssh_port = None
    ports = tuple(request.ports)
    if user_mode:
        records = place.records() if place and not print_only else (
            [] if place else list_records(settings.paths.instances))
        taken = {r.ssh_port for r in records if r.ssh_port}
        taken |= {p["host_port"] for r in records for p in r.ports}
        taken |= {p.host_port for p in request.ports}
        # a host's ports cannot be probed from here: one no VM of vmctl's uses there is picked,
        # and QEMU on the host refuses the start if something else holds it
        pick = pick_host_port if place else pick_free_port
        ssh_port = request.ssh_port or pick(taken)
        if not ports and defaults.get("ports"):
            ports = _exposed_forwards(defaults["ports"], taken | {ssh_port}, pick)
    network = _network(request, profile, ssh_port)
    virt_type = _virt_type(session, profile)
    warm = plan_warm(image, request, profile=profile.name, virt_type=virt_type, network_kind=network["kind"],
                     cpus=request.cpus, memory_mib=mib(request.memory_bytes) if request.memory_bytes is not None else None,
                     on_host=host is not None)
    if warm.warm:
        cpus, memory_mib = warm.checkpoint["cpus"], warm.checkpoint["memory_mib"]
    elif warm.checkpoint is not None and warm.reason != "--cold" and not print_only:
        session.warn(f"{name}: {warm.reason}, so it boots instead of starting from the image's checkpoint")
    restrict = settings.restrict_network if request.restrict is None else request.restrict
    if host and user_mode and restrict:
        # slirp's restrict=on drops every packet the guest sends outside its virtual network, and
        # a forward keeps the address of a client on another machine: no reply would reach it
        raise UsageError(f"--restrict-network: a restricted user network cannot answer clients on other "
                         f"machines, so a VM on host {host.name} would be unreachable; attach it to a "
                         "bridge (--bridge) or a libvirt network instead, or leave the restriction off")
    host_key = generate_host_key()
    boot = config.get("boot", {"kind": "firmware", "firmware": "bios"})
    firmware = _firmware(boot, request)
    vm_uuid = request.uuid or str(uuidlib.uuid4())
    created = _now()
    seed = bool(config.get("cloud_init", True))
    login = login_user(request.user, config, seed=seed)
    static = _static_address(request, network, seed, vm_uuid)
    mounts = _volumes(session, request, seed)
    inputs = DomainInputs(
        name=name,
        uuid=vm_uuid,
        mode=settings.mode,
        profile=profile.name,
        image_ref=str(request.image),
        image_id=image.id,
        virt_type=virt_type,
        boot_kind=boot.get("kind", "firmware"),
        kernel=(place.blob(image.kernel) if place else str(image.kernel)) if image.kernel else None,
        initrd=(place.blob(image.initrd) if place else str(image.initrd)) if image.initrd else None,
        cmdline=boot.get("cmdline"),
        firmware=firmware,
        secure_boot=request.secure_boot,
        tpm=request.tpm,
        cpus=cpus,
        memory_mib=memory_mib,
        disk=place.disk(name) if place else str(directory / DISK),
        seed=(place.seed(name) if place else str(directory / SEED)) if seed else None,
        serial_log=place.serial_log(name) if place else str(directory / SERIAL_LOG),
        network=network["kind"],
        network_name=network.get("name"),
        ssh_host_port=ssh_port,
        ports=ports,
        restrict=bool(restrict),
        passt_supported=_passt_supported(session),
        ssh_host_key=host_key.public,
        created=created,
        volumes=mounts,
        limits=request.limits,
        max_cpus=request.max_cpus,
        segments=tuple(seg for seg, _ in request.segments),
        mac=request.mac,
        genid=str(uuidlib.uuid4()),
        agent_channel=can_reidentify(image),
        machine=warm.checkpoint["machine"] if warm.warm else None,
        forward_address=host.address if host else LOOPBACK,
    )
    record = InstanceRecord(
        name=name, uuid=vm_uuid, mode=settings.mode, uri=settings.uri, profile=profile.name,
        image_ref=str(request.image), image_id=image.id, created=created,
        ssh_user=login, host_key=host_key.public, ssh_port=ssh_port,
        ports=[{"host": host.address if host else p.host_address, "host_port": p.host_port,
                "guest_port": p.guest_port, "proto": p.proto} for p in ports],
        network=network, restrict=bool(restrict), cpus=cpus, memory_mib=memory_mib,
        disk_bytes=request.disk_bytes, static_ip=static.host if static else None,
        boot={"kind": inputs.boot_kind, "firmware": firmware if inputs.boot_kind == "firmware" else None,
              "secure_boot": request.secure_boot, "tpm": request.tpm},
        volumes=[m.to_json() for m in mounts],
        limits=request.limits.to_json(), max_cpus=request.max_cpus, stack=dict(request.stack),
        warm={"checkpoint": image.id, "pending": True} if warm.warm else {},
        host=host.name if host else None, ssh_host=host.address if host else LOOPBACK,
        layers=list(image.layer_digests) if host else [],
    )
    if host:   # the host keeps the record in the domain itself (vmctl.core.hostplace)
        inputs = replace(inputs, record_json=record.to_json())
    domain = plan_domain(profile, inputs)   # the one check of the request's values
    return CreatePlan(record=record, directory=directory, image=image, host_key=host_key,
                      authorized_keys=list(request.ssh_keys), user_data=request.user_data, domain=domain,
                      disk_bytes=request.disk_bytes, seed=seed, static=static, volumes=mounts,
                      bootcmd=_boot_commands(request, name, mounts, seed,
                                             # vmctl's own guest applies bootcmd, not network-config
                                             static if can_reidentify(image) else None))


def print_xml(session: Session, request: CreateRequest) -> str:
    """The exact XML `create` would define for `request`; touches nothing."""
    return plan(session, request, print_only=True).xml


def _check_free(session: Session, name: str, directory: Path) -> None:
    if directory.exists():
        raise ConflictError(f"VM {name} already exists (remove it with 'vmctl rm {name}')")
    if session.backend.exists(name):
        raise ConflictError(f"a libvirt domain named {name} already exists (not made by this vmctl store)")


def _check_space(root: Path) -> None:
    free = shutil.disk_usage(root if root.exists() else root.parent).free
    if free < CREATE_SPACE:
        raise ResourceError(f"not enough space under {root} to create a VM: {free >> 20} MiB free, "
                            f"{CREATE_SPACE >> 20} MiB needed; nothing was changed")


def _build_on_host(session: Session, request: CreateRequest, tx: Transaction) -> Instance:
    """The create steps on a vmctl host, each with its undo on `tx`: the image's missing layers
    sent, the overlay made by the host's libvirt, the seed uploaded, the domain defined with the
    record in its metadata. Nothing is written on this machine but the seed's temporary file."""
    backend, say, name = session.backend, session.progress, request.name
    host = session.host
    if backend.exists(name):
        raise ConflictError(f"VM {name} already exists on {host.name} (remove it with 'vmctl --host {host.name} rm {name}')")
    the_plan = plan(session, request)
    rec = the_plan.record
    place = HostPlace(session)
    place.ensure()
    client_key = ensure_client_key(session.settings.paths.keys)
    say(f"{name}: bringing {request.image} to {host.name}", None)
    staged = place.stage_image(the_plan.image, say)
    say(f"{name}: {staged.layers_sent} layer(s) sent ({staged.sent} bytes), {staged.layers_present} already on "
        f"{host.name}", None)
    say(f"{name}: creating the disk on {host.name}", None)
    # made before its undo is registered: an overlay of that name already there (another client's
    # create of the same name) fails here and is not removed by this create's undo
    place.make_overlay(name, the_plan.image.layer_digests[-1], the_plan.disk_bytes)
    tx.on_undo(lambda: place.remove_files(name), "remove the VM's files on the host")
    faults.point("host.create.after-overlay")
    if the_plan.seed:
        say(f"{name}: writing the cloud-init seed", None)
        with tempfile.TemporaryDirectory(prefix="vmctl-seed-") as tmp:
            local = Path(tmp) / SEED
            write_seed(local, instance_id=rec.uuid, hostname=name,
                       authorized_keys=[client_key.public_line, *the_plan.authorized_keys],
                       host_keys=[the_plan.host_key], user_data=the_plan.user_data, login=rec.ssh_user,
                       network=the_plan.static, bootcmd=the_plan.bootcmd, manage_etc_hosts=not request.hosts)
            place.put_seed(name, local)
    say(f"{name}: defining the domain on {host.name}", None)
    domain = the_plan.domain
    backend.define(domain.to_xml())
    tx.on_undo(lambda: backend.undefine(name), "undefine")
    faults.point("host.create.after-define")
    domain.metadata.state = "created"
    backend.define(domain.to_xml())
    return Instance(session, name, rec, the_plan.directory, _state="stopped")


def pick_host_port(taken: set[int]) -> int:
    """A port for a forward on a host, among 20000-59999, that no VM of vmctl's there uses."""
    for _ in range(256):
        port = 20000 + secrets.randbelow(40000)
        if port not in taken:
            return port
    raise ResourceError("no free port left for the SSH forward on the host")


def _build(session: Session, request: CreateRequest, tx: Transaction) -> Instance:
    """The create steps, each with its undo on `tx`; the caller holds the name lock."""
    if session.host is not None:
        return _build_on_host(session, request, tx)
    settings, store, backend, say = session.settings, session.store, session.backend, session.progress
    name = request.name
    directory = settings.paths.instance_dir(name)
    _check_free(session, name, directory)
    the_plan = plan(session, request)
    rec = the_plan.record
    user = qemu_user(settings.uri)
    require_path_search(settings.root, user)   # before anything is written
    for m in the_plan.volumes:
        if m.transport == "9p":
            require_shared_dir(Path(m.source), user, writable=not m.readonly)
    _check_space(settings.root)
    client_key = ensure_client_key(settings.paths.keys)
    store.hold(rec.image_id, f"instance:{name}")
    tx.on_undo(lambda: store.release(rec.image_id, f"instance:{name}"), "release image")
    faults.point("create.after-hold")
    private_dir(settings.paths.instances, user)
    staging = settings.paths.instances / f".creating-{name}-{os.urandom(4).hex()}"
    private_dir(staging, user)
    tx.on_undo(lambda: shutil.rmtree(staging, ignore_errors=True), "remove staging dir")
    say(f"{name}: creating the disk", None)
    disk = staging / DISK
    qemu_img.create(disk, the_plan.disk_bytes, backing=the_plan.image.top_layer, backing_fmt="qcow2")
    qemu_readable(disk, user, writable=True)
    if the_plan.seed:
        say(f"{name}: writing the cloud-init seed", None)
        write_seed(staging / SEED, instance_id=rec.uuid, hostname=name,
                   authorized_keys=[client_key.public_line, *the_plan.authorized_keys],
                   host_keys=[the_plan.host_key], user_data=the_plan.user_data, login=rec.ssh_user,
                   network=the_plan.static, bootcmd=the_plan.bootcmd, manage_etc_hosts=not request.hosts)
        qemu_readable(staging / SEED, user)
    if rec.warm.get("pending"):
        save_identity(staging, the_plan.host_key, [client_key.public_line, *the_plan.authorized_keys])
    faults.point("create.after-disk")
    rec.save(staging)
    # The marker says "not finished" until the domain is defined as created: a killed create
    # leaves a directory that doctor recognises and `ls` does not show.
    (staging / CREATING_MARK).touch(mode=0o600)
    os.rename(staging, directory)
    tx.on_undo(lambda: (release_under(directory), shutil.rmtree(directory, ignore_errors=True)),
               "remove instance dir")
    faults.point("create.after-rename")
    say(f"{name}: defining the domain", None)
    # Defined as "creating" first: a killed process leaves a domain that says so.
    domain = the_plan.domain
    backend.define(domain.to_xml())
    tx.on_undo(lambda: backend.undefine(name), "undefine")
    faults.point("create.after-define")
    domain.metadata.state = "created"
    backend.define(domain.to_xml())
    (directory / CREATING_MARK).unlink()
    return Instance(session, name, rec, directory, _state="stopped")


def _power_off_if_running(session: Session, name: str) -> None:
    try:
        session.backend.destroy(name)
    except ConflictError:
        pass  # it never started


def create(session: Session, request: CreateRequest) -> Instance:
    """Create the VM of `request` as one transaction; return its handle."""
    name = check_name(request.name, "VM name")
    # Connect before writing anything: with libvirt down, create fails having touched nothing.
    session.backend.versions()
    with name_lock(session.locks, name), Transaction(warn=session.warn) as tx:
        return _build(session, request, tx)


def run(session: Session, request: CreateRequest, *, wait: str | None = "ssh", timeout: float = 300) -> Instance:
    """``vmctl run``: create and start as one transaction (a VM that does not start is undone,
    nothing is left), then — the VM now exists and runs — wait until SSH lets vmctl in (`wait`
    ``cloud-init``: and until cloud-init has finished; None: do not wait)."""
    name = check_name(request.name, "VM name")
    session.backend.versions()
    with name_lock(session.locks, name), Transaction(warn=session.warn) as tx:
        inst = _build(session, request, tx)
        session.progress(f"{name}: starting", None)
        # A start that fails (or is interrupted) after QEMU came up must not leave it running
        # behind an undefined domain: power it off before the rest is undone.
        tx.on_undo(lambda: _power_off_if_running(session, name), "power off")
        ensure_binds(inst.record.volumes)
        start_fresh(session, inst, boot=lambda: start_domain(session, name, inst.record.limits))
        apply_after_start(session.backend, name, inst.record.limits)
        inst._state = "running"
    if wait:
        inst.wait_for_ssh(timeout, wait)
    return inst
