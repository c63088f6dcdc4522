"""What `vmctl info` reports: versions, mode, URI, the KVM verdict, store paths and registry mirrors."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess

from vmctl import __version__
from vmctl.backend.connection import bindings_version
from vmctl.backend.kvm_probe import probe_kvm
from vmctl.core.session import Session
from vmctl.errors import UsageError, VmctlError
from vmctl.registry import mirrors


def qemu_version() -> str | None:
    """The installed qemu-system-x86_64's version, or None when it is not installed."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        return None
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"version (\S+)", out)
    return match.group(1) if match else out.strip() or None


def version_info() -> dict:

    return {
        "vmctl": __version__,
        "python": platform.python_version(),
        "libvirt_python": bindings_version(),
    }


def registry_mirrors(settings) -> tuple[list[dict], str | None]:
    """The mirror rules in effect (:func:`vmctl.registry.mirrors.configured`) as plain data, and
    the error of a config file that cannot be read (then the list is empty): info reports it, a
    pull would fail on it."""
    try:
        rules = mirrors.configured(settings)
    except UsageError as exc:
        return [], exc.message
    return [{"registry": r.prefix, "source": r.source,
             "mirrors": [{"location": m.location, "host": m.host, "insecure": m.insecure, "pull": m.pull}
                         for m in r.mirrors]} for r in rules], None


def host_info(session: Session, *, refresh_probe: bool = False) -> tuple[dict, VmctlError | None]:
    """Collect host facts; a libvirt failure is reported in the result and returned, not raised."""
    settings = session.settings
    verdict = probe_kvm(refresh=refresh_probe)
    paths = settings.paths
    # what guests get: the configured accelerator, else the probe's verdict
    accelerator = settings.accelerator if settings.accelerator != "auto" else ("kvm" if verdict.usable else "tcg")
    info: dict = {
        "vmctl": __version__,
        "mode": settings.mode,
        "uri": settings.uri,
        "profile": settings.profile,
        "qemu": qemu_version(),
        "kvm": {
            "usable": verdict.usable,
            "verified": True,
            "reason": verdict.reason,
            "accelerator": accelerator,
            "cached": verdict.cached,
        },
        "store": {
            "root": str(paths.root),
            "images": str(paths.images),
            "instances": str(paths.instances),
            "keys": str(paths.keys),
        },
        "config_file": str(settings.config_file) if settings.config_file else None,
    }
    info["registry_mirrors"], mirror_error = registry_mirrors(settings)
    if mirror_error:
        info["registry_mirrors_error"] = mirror_error
    error = None
    try:
        backend = session.backend
        info["libvirt"] = backend.versions()
        info["libvirt"]["passt_user_networking"] = backend.supports_passt()
    except VmctlError as exc:
        info["libvirt"] = {"error": exc.message}
        error = exc
    return info, error
