"""Creating a VM: plan (pure decisions) then execute (a transaction that undoes itself on failure).

`plan` resolves everything a definition needs — profile, image, accelerator, network, ports, paths,
a fresh SSH host key — and renders the domain XML, touching nothing; ``create --print-xml`` stops
there. `create` then takes the name lock and makes the files under a temporary directory, renames it
into place, defines the domain with validation and records the instance; any failure undoes every
step in reverse, so nothing half-made is left behind.
"""

from __future__ import annotations

import os
import shutil
import uuid as uuidlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from vmctl.core.hostports import pick_free_port
from vmctl.core.namelock import name_lock
from vmctl import faults
from vmctl.core.records import CREATING_MARK, DISK, SEED, SERIAL_LOG, InstanceRecord, list_records
from vmctl.core.transaction import Transaction
from vmctl.errors import ConflictError, ResourceError, UsageError, VmctlError
from vmctl.names import check_name
from vmctl.units import mib


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


@dataclass
class CreatePlan:
    """Every decision of a create, and the XML it leads to."""

    record: InstanceRecord
    directory: Path
    image: object
    host_key: object
    authorized_keys: list[str]
    user_data: str | None
    xml: str
    disk_bytes: int | None
    inputs: object = field(repr=False, default=None)
    profile: object = field(repr=False, default=None)


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _virt_type(profile) -> str:
    """KVM only when the profile wants it and the probe verified it really runs a guest."""
    from vmctl.backend.kvm_probe import probe_kvm

    if profile.virt_type == "qemu":
        return "qemu"
    return "kvm" if probe_kvm().usable else "qemu"


def _passt_supported(app) -> bool:
    try:
        return app.backend.supports_passt()
    except VmctlError:
        return False


def _network(app, request: CreateRequest, profile, ssh_port: int | None) -> dict:
    if request.bridge:
        check_name(request.bridge, "bridge name")
        return {"kind": "bridge", "name": request.bridge}
    if request.network:
        check_name(request.network, "network name")
        return {"kind": "network", "name": request.network}
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

    @property
    def id(self) -> str:
        return f"file:{self.path}"

    config = {"boot": {"kind": "firmware", "firmware": "bios"}, "cloud_init": True, "defaults": {}}
    kernel = None
    initrd = None

    @property
    def top_layer(self) -> Path:
        return self.path


def _resolve_image(app, ref: str, *, print_only: bool):
    from vmctl.storage.refs import looks_like_path

    if looks_like_path(ref) and Path(ref).is_file():
        if not print_only:
            raise UsageError(f"{ref} is a file, not an image: import it first with 'vmctl image import {ref} NAME'")
        return _DiskFileImage(Path(ref).absolute())
    return app.store.resolve(ref)


def plan(app, request: CreateRequest, *, print_only: bool = False) -> CreatePlan:
    """Decide everything about a new VM and render its XML; writes nothing."""
    from vmctl.core.domain_plan import DomainInputs, plan_domain
    from vmctl.profiles import load_profile
    from vmctl.seed.hostkeys import generate_host_key

    settings = app.settings
    name = check_name(request.name, "VM name")
    profile = load_profile(request.profile or settings.profile)
    image = _resolve_image(app, request.image, print_only=print_only)
    config = image.config
    defaults = config.get("defaults", {})
    cpus = request.cpus or defaults.get("cpus") or profile.cpus
    memory_mib = mib(request.memory_bytes) if request.memory_bytes else (defaults.get("memory_mib") or profile.memory_mib)
    if memory_mib < 64:
        raise UsageError(f"--memory {memory_mib}M is too small: a guest needs at least 64M")
    if request.disk_bytes is not None:
        from vmctl.storage import qemu_img

        virtual = int(qemu_img.info(image.top_layer, "qcow2", force_share=True)["virtual-size"])
        if request.disk_bytes < virtual:
            raise UsageError(f"--disk must be at least the image's size ({virtual} bytes): disks only grow")
    directory = settings.paths.instance_dir(name)
    user_mode = not (request.bridge or request.network) and profile.network_kind == "user"
    ssh_port = None
    if user_mode:
        taken = {r.ssh_port for r in list_records(settings.paths.instances) if r.ssh_port}
        taken |= {p.host_port for p in request.ports}
        ssh_port = request.ssh_port or pick_free_port(taken)
    for port in request.ports:
        if not user_mode:
            raise UsageError("--port needs user-mode networking (hosted mode); on a libvirt network or bridge the guest has its own address")
        if port.host_port == ssh_port:
            raise UsageError(f"host port {port.host_port} is vmctl's SSH forward for this VM")
    if len({(p.host_port, p.proto) for p in request.ports}) != len(request.ports):
        raise UsageError("the same host port is forwarded twice")
    network = _network(app, request, profile, ssh_port)
    restrict = settings.restrict_network if request.restrict is None else request.restrict
    host_key = generate_host_key()
    boot = config.get("boot", {"kind": "firmware", "firmware": "bios"})
    vm_uuid = request.uuid or str(uuidlib.uuid4())
    created = _now()
    inputs = DomainInputs(
        name=name,
        uuid=vm_uuid,
        mode=settings.mode,
        profile=profile.name,
        image_ref=str(request.image),
        image_id=image.id,
        virt_type=_virt_type(profile),
        boot_kind=boot.get("kind", "firmware"),
        kernel=str(image.kernel) if image.kernel else None,
        initrd=str(image.initrd) if image.initrd else None,
        cmdline=boot.get("cmdline"),
        firmware=boot.get("firmware", "bios"),
        cpus=cpus,
        memory_mib=memory_mib,
        disk=str(directory / DISK),
        seed=str(directory / SEED) if config.get("cloud_init", True) else None,
        serial_log=str(directory / SERIAL_LOG),
        network=network["kind"],
        network_name=network.get("name"),
        ssh_host_port=ssh_port,
        ports=tuple(request.ports),
        restrict=bool(restrict),
        passt_supported=_passt_supported(app),
        ssh_host_key=host_key.public,
        created=created,
    )
    domain = plan_domain(profile, inputs)
    record = InstanceRecord(
        name=name, uuid=vm_uuid, mode=settings.mode, uri=settings.uri, profile=profile.name,
        image_ref=str(request.image), image_id=image.id, created=created,
        ssh_user=config.get("user") or "root", host_key=host_key.public, ssh_port=ssh_port,
        ports=[{"host": "127.0.0.1", "host_port": p.host_port, "guest_port": p.guest_port, "proto": p.proto}
               for p in request.ports],
        network=network, restrict=bool(restrict), cpus=cpus, memory_mib=memory_mib,
        disk_bytes=request.disk_bytes,
    )
    return CreatePlan(record=record, directory=directory, image=image, host_key=host_key,
                      authorized_keys=list(request.ssh_keys), user_data=request.user_data, xml=domain.to_xml(),
                      disk_bytes=request.disk_bytes, inputs=inputs, profile=profile)


def print_xml(app, request: CreateRequest) -> str:
    """The exact XML `create` would define for `request`; touches nothing."""
    return plan(app, request, print_only=True).xml


def _check_free(app, name: str, directory: Path) -> None:
    if directory.exists():
        raise ConflictError(f"VM {name} already exists (remove it with 'vmctl rm {name}')")
    if app.backend.exists(name):
        raise ConflictError(f"a libvirt domain named {name} already exists (not made by this vmctl store)")


CREATE_SPACE = 16 << 20  # the seed, the record and the overlay's first clusters, with room to boot


def _check_space(root: Path) -> None:
    free = shutil.disk_usage(root if root.exists() else root.parent).free
    if free < CREATE_SPACE:
        raise ResourceError(f"not enough space under {root} to create a VM: {free >> 20} MiB free, "
                            f"{CREATE_SPACE >> 20} MiB needed; nothing was changed")


def create(app, request: CreateRequest, progress=None) -> InstanceRecord:
    """Create the VM of `request` as one transaction; return its record."""
    from vmctl.core.domain_plan import mark_created
    from vmctl.guest.keys import ensure_client_key
    from vmctl.perms import private_dir, qemu_readable, qemu_user, require_path_search
    from vmctl.seed.writer import write_seed
    from vmctl.storage import qemu_img

    settings = app.settings
    name = check_name(request.name, "VM name")
    # Connect before writing anything: with libvirt down, create fails having touched nothing.
    app.backend.versions()
    with name_lock(settings.paths.locks, name):
        directory = settings.paths.instance_dir(name)
        _check_free(app, name, directory)
        the_plan = plan(app, request)
        rec = the_plan.record
        user = qemu_user(settings.uri)
        require_path_search(settings.root, user)   # before anything is written
        _check_space(settings.root)
        client_key = ensure_client_key(settings.paths.keys)
        with Transaction() as tx:
            app.store.hold(rec.image_id, f"instance:{name}")
            tx.on_undo(lambda: app.store.release(rec.image_id, f"instance:{name}"), "release image")
            faults.point("create.after-hold")
            private_dir(settings.paths.instances, user)
            staging = settings.paths.instances / f".creating-{name}-{os.urandom(4).hex()}"
            private_dir(staging, user)
            tx.on_undo(lambda: shutil.rmtree(staging, ignore_errors=True), "remove staging dir")
            disk = staging / DISK
            qemu_img.create(disk, the_plan.disk_bytes, backing=the_plan.image.top_layer, backing_fmt="qcow2")
            qemu_readable(disk, user, writable=True)
            if the_plan.inputs.seed:
                write_seed(staging / SEED, instance_id=rec.uuid, hostname=name,
                           authorized_keys=[client_key.public_line, *the_plan.authorized_keys], host_keys=[the_plan.host_key],
                           user_data=the_plan.user_data)
                qemu_readable(staging / SEED, user)
            faults.point("create.after-disk")
            rec.save(staging)
            # The marker says "not finished" until the domain is defined as created: a killed
            # create leaves a directory that doctor recognises and `ls` does not show.
            (staging / CREATING_MARK).touch(mode=0o600)
            os.rename(staging, directory)
            tx.on_undo(lambda: shutil.rmtree(directory, ignore_errors=True), "remove instance dir")
            faults.point("create.after-rename")
            # Defined as "creating" first: a killed process leaves a domain that says so.
            app.backend.define(the_plan.xml)
            tx.on_undo(lambda: app.backend.undefine(name), "undefine")
            faults.point("create.after-define")
            app.backend.define(mark_created(the_plan.xml))
            (directory / CREATING_MARK).unlink()
        return rec


def start_created(app, name: str) -> None:
    """Start a VM that `create` just made (run's second step)."""
    from vmctl.core import instances

    instances.start(app, name)


def redefine_ssh_port(app, rec: InstanceRecord, port: int) -> None:
    """Move a stopped hosted VM's SSH forward to `port` (its old one was taken meanwhile)."""
    from vmctl.core.domain_plan import move_ssh_port

    xml = app.backend.xml(rec.name, inactive=True)
    app.backend.define(move_ssh_port(xml, rec.ssh_port, port))
    updated = replace(rec, ssh_port=port)
    updated.save(app.settings.paths.instance_dir(rec.name))
