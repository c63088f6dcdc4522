"""Running a Vmfile: each RUN/COPY/CMD step a cached qcow2 layer, one VM for all the steps to run.

Cache. A step's key is the hash of the previous step's key (the FROM image's id first), the
instruction with its ARG/ENV/USER/WORKDIR context, and -- for COPY -- the digest of the files it
copies (paths, modes, contents). The image a layer step made carries its key as the label
``vmctl.build.key``; a rebuild reuses every step whose key is found (``--no-cache``: none) and
starts a VM only for the first step that is not.

One VM, exact layers. The VM boots once from the last cached image. Before each layer is cut the
guest's writes are flushed (its guest agent freezes the file systems, else ``sync`` over SSH), then
an external disk-only snapshot switches QEMU to a new overlay: the overlay it leaves holds exactly
that step's writes, and becomes the layer (converted onto the previous step's image). So no write
is lost, no step's layer carries another's, and the VM never stops between steps.

A failing step stops the build with the step's exit status and output; the VM is removed and no
image of that step exists. Metadata steps (ENV, WORKDIR, USER, LABEL, EXPOSE) make no layer; the
final image carries them (a config-only layer when they follow the last layer step).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import stat
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

from vmctl.backend import snapshots as bsnap
from vmctl.core import commit as commit_ops
from vmctl.core.checkpoint import checkpoint
from vmctl.core import create as create_ops
from vmctl.core import remove as remove_ops
from vmctl.core.reach import as_root
from vmctl.core.session import Session
from vmctl.errors import UsageError, VmctlError
from vmctl.guest.keys import ensure_client_key
from vmctl.guest.ssh import GuestSession
from vmctl.perms import qemu_readable, qemu_user
from vmctl.storage import qemu_img
from vmctl.storage.store import BUILD_KEY_LABEL
from vmctl.vmfile.parse import Step, Vmfile
from vmctl.xml.domain import Domain
from vmctl.xml.snapshot import DomainSnapshot

LAYER_STEPS = ("RUN", "COPY", "CMD", "ENTRYPOINT")
MAX_COPY_FILES = 100_000
SERVICE = "/etc/vmctl-cmd"


class StepFailed(VmctlError):
    """A RUN step's command failed: vmctl exits with the command's own status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.exit_code = status if 0 < status < 256 else 1


@dataclass
class StepReport:
    number: int
    instruction: str
    cached: bool
    image: str | None = None
    seconds: float = 0.0


@dataclass
class BuildResult:
    image: object
    steps: list[StepReport] = field(default_factory=list)
    vm_boots: int = 0

    def to_json(self) -> dict:
        return {"id": self.image.id, "tags": list(self.image.repo_tags), "vm_boots": self.vm_boots,
                "steps": [s.__dict__ for s in self.steps]}


# -- cache keys ------------------------------------------------------------------------------
def _context_files(context: Path, step: Step) -> list[tuple[Path, str]]:
    """(host path, absolute guest path) of every file and directory a COPY step copies, as
    Docker lays them out (a file to DEST, or into DEST/ when DEST is a directory; a directory's
    contents into DEST), never leaving the context: a source that leads out of it, and links and
    special files inside a copied directory, are refused."""
    sources, dest, _chown, into_dir = step.args
    root = context.resolve()
    out: list[tuple[Path, str]] = []
    for src in sources:
        real = Path(os.path.realpath(context / src))
        if real != root and root not in real.parents:
            raise UsageError(f"line {step.line}: COPY {src}: it leads outside the build context")
        if real.is_file():
            out.append((real, os.path.join(dest, real.name) if into_dir else dest))
        elif real.is_dir():
            out.append((real, dest))
            for dirpath, dirnames, filenames in os.walk(real):
                dirnames.sort()
                for name in sorted(dirnames) + sorted(filenames):
                    full = Path(dirpath) / name
                    if full.is_symlink() or not (full.is_file() or full.is_dir()):
                        raise UsageError(f"line {step.line}: COPY {src}: {full.relative_to(root)} is a link "
                                         "or a special file")
                    out.append((full, os.path.join(dest, os.path.relpath(full, real))))
        else:
            raise UsageError(f"line {step.line}: COPY {src}: no such file or directory in the build context")
        if len(out) > MAX_COPY_FILES:
            raise UsageError(f"line {step.line}: COPY: more than {MAX_COPY_FILES} files")
    return out


def _copy_digest(files: list[tuple[Path, str]]) -> str:
    h = hashlib.sha256()
    for path, arc in files:
        st = path.stat()
        h.update(f"{arc}\0{stat.S_IMODE(st.st_mode):o}\0{'d' if path.is_dir() else st.st_size}\0".encode())
        if path.is_file():
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def step_key(previous: str, step: Step, copy_digest: str = "") -> str:
    text = json.dumps([previous, step.keyword, list(map(str, step.args)), step.env, step.user, step.workdir,
                       copy_digest], sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# -- the build VM ----------------------------------------------------------------------------
class BuildVM:
    """The VM the uncached steps run in, and the layers cut from it."""

    def __init__(self, session: Session, image, output: BinaryIO):
        self.session, self.output = session, output
        self.name = f"vmctl-build-{os.urandom(4).hex()}"
        request = create_ops.CreateRequest(name=self.name, image=image.id)
        self.inst = create_ops.run(session, request, wait="ssh", timeout=900)
        self.overlay = self.inst.disk            # the file QEMU writes now
        self.cuts = 0

    def guest(self) -> GuestSession:
        host, port = self.inst.address()
        return GuestSession(host, port, user=self.inst.record.ssh_user,
                            client_key=ensure_client_key(self.session.paths.keys),
                            host_key_line=self.inst.record.host_key)

    def sh(self, script: str, *, root: bool, stdin: bytes | None = None) -> int:
        """Run `script` in the guest (as root through sudo when the login is not root), its output
        streamed to the build's output; its exit status."""
        command = as_root(["sh", "-c", script], self.inst.record.ssh_user) if root else ["sh", "-c", script]
        with self.guest() as guest:
            return guest.run(command, stdin=stdin, stdout=self.output, stderr=self.output)

    def cut(self, parent, key: str, created_by: str, *, labels: dict, defaults: dict, user: str | None):
        """Make the image of the step just run: its writes, on `parent`."""
        backend = self.session.backend
        self.cuts += 1
        frozen_overlay = self.overlay
        fresh = self.inst.directory / f"step-{self.cuts}.qcow2"
        size = int(qemu_img.info(frozen_overlay, "qcow2", force_share=True)["virtual-size"])
        qemu_img.create(fresh, size, backing=frozen_overlay.name, backing_fmt="qcow2", unsafe_size=True)
        qemu_readable(fresh, qemu_user(self.session.settings.uri), writable=True)
        doc = DomainSnapshot()
        doc.name = f"vmctl-build-{self.cuts}"
        for dev, path in self._disks():
            disk = doc.add_disk(dev, "external" if path == str(frozen_overlay) else "no")
            if path == str(frozen_overlay):
                disk.type, disk.driver_type, disk.source_file = "file", "qcow2", str(fresh)
        with bsnap.frozen(backend, self.name) as frozen:
            if not frozen:
                commit_ops.flush_guest(self.inst)
            bsnap.switch_to_overlay(backend, self.name, doc.to_xml())
        self.overlay = fresh
        store = self.session.store
        with store.session("build-step") as work:
            top = work.path / "top.qcow2"
            commit_ops.convert_disk(frozen_overlay, top, backing=parent.top_layer.resolve(), force_share=True)
            return store.add_layer(parent.id, top, None, created_by=created_by,
                                   labels={**labels, BUILD_KEY_LABEL: key}, defaults=defaults, user=user)

    def _disks(self) -> list[tuple[str, str]]:
        dom = Domain.from_xml(self.session.backend.xml(self.name))
        return [(d.target_dev, d.source_file) for d in dom.devices.disks]

    def remove(self) -> None:
        try:
            remove_ops.remove(self.session, self.name, force=True)
        except VmctlError as exc:
            self.session.warn(f"could not remove the build VM {self.name}: {exc}")


# -- steps -----------------------------------------------------------------------------------
def _exports(step: Step) -> str:
    return "".join(f"export {k}={shlex.quote(v)}; " for k, v in step.env)


def _as_user(step: Step, login: str, script: str) -> tuple[str, bool]:
    """The script and whether it runs as root: RUN --root, or USER (not the login) through su."""
    if step.keyword == "RUN" and step.args[0]:
        return script, True
    if step.user and step.user != login:
        return f"exec su -s /bin/sh {shlex.quote(step.user)} -c {shlex.quote(script)}", True
    return script, login == "root"


def _command_text(command) -> str:
    return shlex.join(command) if isinstance(command, tuple) else command


def run_step(vm: BuildVM, step: Step, files: list[tuple[Path, str]] | None) -> None:
    """Run one layer step in the build VM; StepFailed with the command's status when it fails."""
    login = vm.inst.record.ssh_user
    workdir = shlex.quote(step.workdir)
    if step.keyword == "RUN":
        script = f"{_exports(step)}mkdir -p {workdir} 2>/dev/null; cd {workdir} && {_command_text(step.args[1])}"
        script, root = _as_user(step, login, script)
        status = vm.sh(script, root=root)
        if status != 0:
            raise StepFailed(f"line {step.line}: {step.text[:120]} exited with status {status}", status)
    elif step.keyword == "COPY":
        _sources, dest, chown, into_dir = step.args
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path, target in files or []:
                info = tar.gettarinfo(str(path), arcname=target.lstrip("/") or ".")
                info.uid = info.gid = 0          # root's, as Docker's COPY without --chown
                info.uname = info.gname = "root"
                if path.is_file():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        owner = f" && chown -R {shlex.quote(chown)} {shlex.quote(dest)}" if chown else ""
        status = vm.sh(f"mkdir -p {shlex.quote(dest if into_dir else os.path.dirname(dest) or '/')} && "
                       f"tar -xf - -C /{owner}", root=True, stdin=buf.getvalue())
        if status != 0:
            raise StepFailed(f"line {step.line}: {step.text[:120]}: copying into the guest failed ({status})", status)
    else:   # CMD / ENTRYPOINT: the service the image starts at boot
        command = _command_text(step.args[0])
        body = f"#!/bin/sh\n{_exports(step)}cd {workdir} || exit 1\nexec {command}\n"
        if step.user and step.user != "root":
            body = f"#!/bin/sh\nexec su -s /bin/sh {shlex.quote(step.user)} -c {shlex.quote(body)}\n"
        install = (f"cat > {SERVICE} && chmod 755 {SERVICE} && "
                   "if [ -d /run/systemd/system ]; then "
                   "printf '[Unit]\\nDescription=vmctl image command\\nAfter=network-online.target\\n[Service]\\n"
                   f"ExecStart={SERVICE}\\nRestart=always\\n[Install]\\nWantedBy=multi-user.target\\n' "
                   "> /etc/systemd/system/vmctl-cmd.service && systemctl enable vmctl-cmd.service; "
                   f"else grep -q '{SERVICE}' /etc/inittab || echo '::respawn:{SERVICE}' >> /etc/inittab; fi")
        status = vm.sh(install, root=True, stdin=body.encode())
        if status != 0:
            raise StepFailed(f"line {step.line}: installing the image's command failed ({status})", status)


def build(session: Session, vmfile: Vmfile, context: Path, ref: str, *, no_cache: bool = False,
          output: BinaryIO, say: Callable[[str], None] = lambda _line: None) -> BuildResult:
    """Build `vmfile` (FROM already in the store) in `context` and tag the result `ref`."""
    store = session.store
    current = store.resolve(vmfile.base)
    key = current.id
    labels: dict[str, str] = {}
    ports: list[dict] = []
    user = None
    result = BuildResult(image=None)
    vm: BuildVM | None = None
    steps = list(vmfile.steps)
    checkpoint_step = steps.pop() if steps and steps[-1].keyword == "CHECKPOINT" else None
    total = len(steps)
    try:
        for n, step in enumerate(steps, 1):
            t0 = time.monotonic()
            files = _context_files(context, step) if step.keyword == "COPY" else None
            key = step_key(key, step, _copy_digest(files) if files is not None else "")
            if step.keyword == "LABEL":
                labels.update(dict(step.args))
            elif step.keyword == "EXPOSE":
                ports = [{"port": p, "proto": proto} for p, proto in step.args]
            elif step.keyword == "USER":
                user = step.args[0]
            if step.keyword not in LAYER_STEPS:
                say(f"step {n}/{total}: {step.text}")
                result.steps.append(StepReport(n, step.text, True))
                continue
            hit = None if no_cache else store.find_build_step(key)
            if hit is not None:
                say(f"step {n}/{total}: {step.text} (cached)")
                current = hit
                result.steps.append(StepReport(n, step.text, True, hit.id))
                continue
            say(f"step {n}/{total}: {step.text}")
            if vm is None:
                vm = BuildVM(session, current, output)
                result.vm_boots += 1
            run_step(vm, step, files)
            say(f"step {n}/{total}: committing")
            current = vm.cut(current, key, f"{step.keyword} {step.text.split(' ', 1)[-1]}"[:300],
                             labels=labels, defaults=_defaults(current, ports), user=user or current.user)
            result.steps.append(StepReport(n, step.text, False, current.id, time.monotonic() - t0))
    finally:
        if vm is not None:
            vm.remove()
    final_key = step_key(key, Step(0, "CONFIG", json.dumps([labels, ports, user], sort_keys=True)))
    if (labels and any(current.labels.get(k) != v for k, v in labels.items())) \
            or ports != current.defaults.get("ports", []) or (user and user != current.user):
        found = None if no_cache else store.find_build_step(final_key)
        current = found or _config_image(session, current, final_key, labels, ports, user)
    if checkpoint_step is not None:
        current = _checkpoint_image(session, current, step_key(final_key, checkpoint_step), output, say,
                                    no_cache=no_cache, result=result)
    result.image = store.tag(current.id, ref)
    return result


def _checkpoint_image(session: Session, image, key: str, output: BinaryIO, say, *, no_cache: bool,
                      result: BuildResult):
    """CHECKPOINT: boot `image` once, wait until SSH lets vmctl in, save the running machine."""
    store = session.store
    found = None if no_cache else store.find_build_step(key)
    if found is not None:
        say("CHECKPOINT (cached)")
        result.steps.append(StepReport(len(result.steps) + 1, "CHECKPOINT", True, found.id))
        return found
    say("CHECKPOINT: booting the image to save it running")
    t0 = time.monotonic()
    vm = BuildVM(session, image, output)
    result.vm_boots += 1
    try:
        done = checkpoint(session, vm.name, None, message="CHECKPOINT", labels={BUILD_KEY_LABEL: key})
    finally:
        vm.remove()
    result.steps.append(StepReport(len(result.steps) + 1, "CHECKPOINT", False, done.id, time.monotonic() - t0))
    return done


def _defaults(image, ports: list[dict]) -> dict:
    d = {k: v for k, v in image.defaults.items() if k not in ("disk_bytes", "ports")}
    if ports:
        d["ports"] = ports
    return d


def _config_image(session: Session, parent, key: str, labels: dict, ports: list[dict], user: str | None):
    """An image that only changes `parent`'s config: one empty layer (what Docker shows as 0 B)."""
    store = session.store
    with store.session("build-config") as work:
        top = work.path / "top.qcow2"
        qemu_img.create(top, None, backing=parent.top_layer.resolve(), backing_fmt="qcow2")
        return store.add_layer(parent.id, top, None, created_by="config (LABEL, EXPOSE, USER)",
                               labels={**labels, BUILD_KEY_LABEL: key}, defaults=_defaults(parent, ports),
                               user=user or parent.user)


__all__ = ["BuildResult", "StepFailed", "build", "step_key"]
