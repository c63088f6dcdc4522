"""A stack file as typed specs: what each VM asks for, in the order `up` brings them up.

`from_data` takes the schema-checked data of `vmctl.stack.file.load`, so the types are known here;
what the schema cannot say is checked here, each with the file and line's key path in its one-line
error: a dependency on a VM that is not in the file, a cycle, ``healthy`` without a healthcheck, a
network a VM joins that the file does not declare. Paths in the file are relative to its directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vmctl.errors import UsageError

DEFAULT_NETWORK = "default"
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m)?")


def seconds(text: str) -> float:
    """``2s``, ``500ms``, ``1m`` or a bare number of seconds (the schema checked the form)."""
    number, unit = _DURATION.fullmatch(text).groups()
    return float(number) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[unit]


@dataclass(frozen=True)
class Healthcheck:
    argv: tuple[str, ...] | None      # an argv, or None with `shell`
    shell: str | None
    interval: float = 2.0
    timeout: float = 30.0
    retries: int = 60
    start_period: float = 0.0

    @property
    def command(self) -> list[str]:
        return list(self.argv) if self.argv else ["sh", "-c", self.shell]


@dataclass(frozen=True)
class Build:
    context: Path
    file: Path | None = None
    args: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VmSpec:
    """One VM of the file, as written (sizes, ports and limits still text: `up` parses them the way
    ``vmctl run`` does)."""
    name: str
    image: str | None = None
    build: Build | None = None
    cpus: int | None = None
    memory: str | None = None
    disk: str | None = None
    profile: str | None = None
    user: str | None = None
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    user_data: str | None = None
    user_data_file: Path | None = None
    ssh_keys: tuple[str, ...] = ()
    networks: tuple[tuple[str, str | None], ...] = ()   # (network, fixed address or None)
    limits: tuple[tuple[str, object], ...] = ()         # create's limit options, as given
    depends_on: tuple[tuple[str, str], ...] = ()        # (vm, condition)
    healthcheck: Healthcheck | None = None

    def definition(self) -> dict:
        """Everything of the VM's spec that makes its definition (JSON-able): what `up` compares
        to tell a changed VM."""
        d = asdict(self)
        for key in ("depends_on", "healthcheck", "name"):
            d.pop(key)   # how it is waited for is not what it is
        return json.loads(json.dumps(d, default=str))


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    subnet: str | None = None
    internal: bool = False


@dataclass(frozen=True)
class StackSpec:
    name: str
    file: Path
    directory: Path
    vms: dict[str, VmSpec] = field(default_factory=dict)
    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()      # named volumes: directories under <directory>/.vmctl/volumes

    def volume_dir(self, name: str) -> Path:
        return self.directory / ".vmctl" / "volumes" / name

    def vm_name(self, short: str) -> str:
        """The VM's name in vmctl: ``<stack>-<vm>``."""
        return f"{self.name}-{short}"

    def order(self) -> list[str]:
        """The VMs in an order where each comes after what it depends on (file order otherwise)."""
        done: list[str] = []
        state: dict[str, str] = {}

        def visit(n: str, chain: list[str]) -> None:
            if state.get(n) == "done":
                return
            if state.get(n) == "visiting":
                raise UsageError(f"{self.file}: depends_on makes a cycle: {' -> '.join(chain + [n])}")
            state[n] = "visiting"
            for dep, _ in self.vms[n].depends_on:
                visit(dep, chain + [n])
            state[n] = "done"
            done.append(n)

        for n in self.vms:
            visit(n, [])
        return done


def stack_name_of(directory: Path) -> str:
    """Compose's default project name: the directory's name, lower case, other characters -> '-'."""
    name = re.sub(r"[^a-z0-9-]+", "-", directory.name.lower()).strip("-")[:24].strip("-")
    if not name:
        raise UsageError(f"cannot make a stack name of directory {directory}: give name: in the file")
    return name


def _healthcheck(d: dict | None) -> Healthcheck | None:
    if d is None:
        return None
    test = d["test"]
    argv, shell = (tuple(test), None) if isinstance(test, list) else (None, test)
    if argv and argv[0] in ("CMD", "CMD-SHELL"):   # compose's forms
        argv, shell = (argv[1:], None) if argv[0] == "CMD" else (None, " ".join(argv[1:]))
        if not (argv or shell):
            raise UsageError("healthcheck test: CMD needs a command")
    return Healthcheck(argv, shell,
                       interval=seconds(d.get("interval", "2s")),
                       timeout=seconds(d.get("timeout", "30s")),
                       retries=d.get("retries", 60),
                       start_period=seconds(d.get("start_period", "0s")))


def _vm(name: str, d: dict, directory: Path) -> VmSpec:
    build = None
    if "build" in d:
        b = d["build"] if isinstance(d["build"], dict) else {"context": d["build"]}
        context = (directory / b["context"]).resolve()
        build = Build(context, (context / b["file"]).resolve() if b.get("file") else None,
                      tuple(sorted((k, str(v)) for k, v in b.get("args", {}).items())))
    nets = d.get("networks", [DEFAULT_NETWORK])
    if isinstance(nets, dict):
        networks = tuple((n, (v or {}).get("ipv4_address")) for n, v in nets.items())
    else:
        networks = tuple((n, None) for n in nets)
    deps = d.get("depends_on", [])
    if isinstance(deps, dict):
        depends = tuple((n, (v or {}).get("condition", "started")) for n, v in deps.items())
    else:
        depends = tuple((n, "started") for n in deps)
    ud = d.get("user-data")
    limits = tuple((k, d[k]) for k in ("cpu-shares", "cpu-quota", "memory-limit", "io-weight", "io-read-bps",
                                        "io-write-bps") if k in d)
    return VmSpec(
        name=name, image=d.get("image"), build=build, cpus=d.get("cpus"),
        memory=str(d["memory"]) if "memory" in d else None, disk=str(d["disk"]) if "disk" in d else None,
        profile=d.get("profile"), user=d.get("user"),
        ports=tuple(str(p) for p in d.get("ports", [])),
        volumes=tuple(d.get("volumes", [])),
        user_data=ud if isinstance(ud, str) else None,
        user_data_file=(directory / ud["file"]).resolve() if isinstance(ud, dict) else None,
        ssh_keys=tuple(d.get("ssh-keys", [])),
        networks=networks, limits=limits, depends_on=depends, healthcheck=_healthcheck(d.get("healthcheck")),
    )


def from_data(data: dict, file: Path) -> StackSpec:
    """The typed stack of schema-checked `data` read from `file`; UsageError on what the schema
    cannot say."""
    directory = file.parent.resolve()
    name = data.get("name") or stack_name_of(directory)
    declared = {n: NetworkSpec(n, (v or {}).get("subnet"), bool((v or {}).get("internal", False)))
                for n, v in (data.get("networks") or {}).items()}
    vms = {n: _vm(n, d, directory) for n, d in data["vms"].items()}
    used = {net for vm in vms.values() for net, _ in vm.networks}
    if DEFAULT_NETWORK in used and DEFAULT_NETWORK not in declared:
        declared[DEFAULT_NETWORK] = NetworkSpec(DEFAULT_NETWORK)   # compose's implicit default network
    for vm in vms.values():
        for net, _ in vm.networks:
            if net not in declared:
                raise UsageError(f"{file}: vms.{vm.name}.networks: network {net} is not declared under networks:")
        for dep, condition in vm.depends_on:
            if dep not in vms:
                raise UsageError(f"{file}: vms.{vm.name}.depends_on: no VM {dep} in this file")
            if dep == vm.name:
                raise UsageError(f"{file}: vms.{vm.name}.depends_on: a VM cannot depend on itself")
            if condition == "healthy" and vms[dep].healthcheck is None:
                raise UsageError(f"{file}: vms.{vm.name}.depends_on: {dep} is waited for as healthy but has no healthcheck")
    volumes = tuple(data.get("volumes") or ())
    for vm in vms.values():
        for v in vm.volumes:
            source = v.split(":", 1)[0]
            if "/" not in source and not source.startswith(".") and source not in volumes:
                raise UsageError(f"{file}: vms.{vm.name}.volumes: {source} is neither a path (./{source}) "
                                 "nor a volume declared under volumes:")
    spec = StackSpec(name=name, file=file.resolve(), directory=directory, vms=vms,
                     networks={n: declared[n] for n in sorted(declared) if n in used}, volumes=volumes)
    spec.order()   # refuse cycles now
    return spec


def definition_hash(vm: VmSpec, image_id: str, addresses: dict[str, str], extra: dict | None = None) -> str:
    """The digest `up` records on a VM and compares: its spec, the image it was made from and its
    addresses on the stack's networks."""
    blob = json.dumps({"vm": vm.definition(), "image": image_id, "addresses": addresses, "extra": extra or {}},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
