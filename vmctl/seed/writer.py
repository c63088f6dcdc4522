"""The NoCloud seed: ``meta-data`` and ``user-data`` on an ISO labelled ``cidata``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from vmctl.errors import UsageError
from vmctl.seed.cloudconfig import combine_user_data, dump_yaml
from vmctl.seed.hostkeys import HostKey
from vmctl.seed.iso import write_iso
from vmctl.seed.netconfig import StaticAddress

SEED_LABEL = "cidata"
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_KEY_RE = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-\S+) [A-Za-z0-9+/=]+( [^\r\n]*)?$")


def check_hostname(hostname: str) -> str:
    """Return ``hostname`` if it is an RFC 1123 host name, else raise ``UsageError``."""
    if not _HOSTNAME_RE.match(hostname):
        raise UsageError(f"invalid hostname {hostname!r}: use letters, digits, '-' and '.'")
    return hostname


def check_authorized_key(key: str) -> str:
    """Return a one-line OpenSSH public key (stripped), else raise ``UsageError``."""
    key = key.strip()
    if not _KEY_RE.match(key):
        raise UsageError(f"not a one-line OpenSSH public key: {key[:40]!r}")
    return key


def meta_data(instance_id: str, hostname: str) -> str:
    """Return NoCloud ``meta-data`` YAML."""
    if not _INSTANCE_RE.match(instance_id):
        raise UsageError(f"invalid instance id {instance_id!r}")
    return dump_yaml({"instance-id": instance_id, "local-hostname": check_hostname(hostname)})


def login_user_entry(login: str, keys: Sequence[str]) -> dict[str, Any]:
    """The ``users:`` entry of vmctl's login user: key-only, passwordless sudo (where the image
    has sudo), created by cloud-init if the image lacks it, keys added if it has it already."""
    return {"name": login, "gecos": "vmctl login user", "lock_passwd": True,
            "sudo": "ALL=(ALL) NOPASSWD:ALL", "ssh_authorized_keys": list(keys)}


def vmctl_cloud_config(hostname: str, authorized_keys: Sequence[str],
                       host_keys: Sequence[HostKey] | None,
                       extra_runcmd: Sequence[str | Sequence[str]] | None,
                       login: str = "root",
                       bootcmd: Sequence[Sequence[str]] = (), manage_etc_hosts: bool = True) -> dict[str, Any]:
    """Return the cloud-config keys vmctl sets: hostname (and ``/etc/hosts``), the login user
    with vmctl's keys, host keys, runcmd, and bootcmd (argv lists run at every boot: vmctl mounts
    the VM's volumes with them). Without `manage_etc_hosts` cloud-init leaves ``/etc/hosts`` alone
    (a stack VM's bootcmd writes it, with its peers; cloud-init would rewrite it after bootcmd).

    The login rule (cloud-init's own semantics): ``root`` is allowed in with ``disable_root:
    false`` and the keys at the top level (cloud-init gives those to root then); any other login
    becomes an entry of ``users:`` after ``default`` (so the image's own default user still
    exists and gets the keys too).
    """
    data: dict[str, Any] = {"hostname": check_hostname(hostname), "manage_etc_hosts": manage_etc_hosts}
    keys = [check_authorized_key(k) for k in authorized_keys]
    if keys:
        data["ssh_authorized_keys"] = keys
    if login == "root":
        data["disable_root"] = False
    else:
        data["users"] = ["default", login_user_entry(login, keys)]
    if host_keys:
        ssh_keys: dict[str, str] = {}
        for hk in host_keys:
            name = hk.cloud_init_name
            if f"{name}_private" in ssh_keys:
                raise UsageError(f"two {name} host keys given")
            ssh_keys[f"{name}_private"] = hk.private_openssh
            ssh_keys[f"{name}_public"] = " ".join(hk.public.split()[:2])
        data["ssh_keys"] = ssh_keys
    if extra_runcmd:
        cmds: list[str | list[str]] = []
        for cmd in extra_runcmd:
            if isinstance(cmd, str):
                cmds.append(cmd)
            else:
                cmds.append([str(a) for a in cmd])
        data["runcmd"] = cmds
    if bootcmd:
        data["bootcmd"] = [[str(a) for a in cmd] for cmd in bootcmd]
    return data


def seed_files(*, instance_id: str, hostname: str, authorized_keys: Sequence[str],
               host_keys: Sequence[HostKey] | None = None, user_data: str | None = None,
               extra_runcmd: Sequence[str | Sequence[str]] | None = None, login: str = "root",
               network: StaticAddress | None = None, bootcmd: Sequence[Sequence[str]] = (),
               manage_etc_hosts: bool = True) -> dict[str, str]:
    """Return ``{"meta-data": ..., "user-data": ...[, "network-config": ...]}`` as ``write_seed``
    would write them."""
    ours = vmctl_cloud_config(hostname, authorized_keys, host_keys, extra_runcmd, login, bootcmd, manage_etc_hosts)
    files = {"meta-data": meta_data(instance_id, hostname),
             "user-data": combine_user_data(ours, user_data)}
    if network is not None:
        files["network-config"] = dump_yaml(network.config())
    return files


def write_seed(path: Path, *, instance_id: str, hostname: str, authorized_keys: Sequence[str],
               host_keys: Sequence[HostKey] | None = None, user_data: str | None = None,
               extra_runcmd: Sequence[str | Sequence[str]] | None = None, login: str = "root",
               network: StaticAddress | None = None, bootcmd: Sequence[Sequence[str]] = (),
               manage_etc_hosts: bool = True) -> None:
    """Write a NoCloud seed ISO (label ``cidata``) at ``path``, atomically, mode 0600.

    ``user_data`` is the user's own (``#cloud-config``, a ``#!`` script or MIME multipart): a
    cloud-config is merged with vmctl's keys (lists appended), anything else is shipped next to
    vmctl's cloud-config as a MIME multipart message. Raises ``UsageError`` on invalid input.
    """
    files = seed_files(instance_id=instance_id, hostname=hostname, authorized_keys=authorized_keys,
                       host_keys=host_keys, user_data=user_data, extra_runcmd=extra_runcmd, login=login,
                       network=network, bootcmd=bootcmd, manage_etc_hosts=manage_etc_hosts)
    write_iso(path, {name: text.encode() for name, text in files.items()}, SEED_LABEL)
