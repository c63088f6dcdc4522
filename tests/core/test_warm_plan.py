"""When a VM of a checkpoint image may start warm: the decision, and why not (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from vmctl.core.warm import hostname_of, plan_warm

CP = {"cpus": 1, "memory_mib": 256, "profile": "hosted", "domain_type": "qemu", "network": "user",
      "machine": "pc-q35-7.2"}


@dataclass
class Image:
    checkpoint: dict | None = field(default_factory=lambda: dict(CP))


@dataclass
class Request:
    cold: bool = False
    volumes: tuple = ()
    user_data: str | None = None
    tpm: bool = False
    firmware: str | None = None
    segments: tuple = ()
    max_cpus: int | None = None


def _plan(image=None, request=None, **kw):
    args = dict(profile="hosted", virt_type="qemu", network_kind="user", cpus=None, memory_mib=None)
    args.update(kw)
    return plan_warm(image or Image(), request or Request(), **args)


def test_same_shape_starts_warm():
    assert _plan().warm and _plan(cpus=1, memory_mib=256).warm


def test_an_image_without_checkpoint_just_boots():
    p = _plan(Image(None))
    assert not p.warm and p.reason is None and p.checkpoint is None


@pytest.mark.parametrize("kw, request_, why", [
    ({}, Request(cold=True), "--cold"),
    ({"cpus": 2}, None, "--cpus 2"),
    ({"memory_mib": 512}, None, "--memory 512 MiB"),
    ({"profile": "dense"}, None, "profile dense"),
    ({"virt_type": "kvm"}, None, "this host runs KVM; the checkpoint was saved under TCG"),
    ({"network_kind": "network"}, None, "a network NIC: the checkpoint was saved with a user one"),
    ({}, Request(volumes=("x",)), "volumes are mounted at boot"),
    ({}, Request(user_data="#cloud-config"), "--user-data runs at boot"),
    ({}, Request(tpm=True), "--tpm"),
    ({}, Request(firmware="uefi"), "UEFI"),
    ({}, Request(max_cpus=4), "--max-cpus"),
])
def test_what_makes_it_boot_is_said(kw, request_, why):
    p = _plan(request=request_, **kw)
    assert not p.warm and why in p.reason


def test_hostnames():
    assert hostname_of("web_1") == "web-1" and hostname_of("a.b-c") == "a.b-c" and hostname_of("___") == "vmctl"
