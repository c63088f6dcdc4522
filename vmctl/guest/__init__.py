"""Talking to a running guest over SSH (paramiko): readiness, exec, copy, interactive shell.

This room never imports libvirt: callers pass addresses (or a function that finds one), vmctl's
client key and the guest's pinned host key line.
"""

from vmctl.guest.cp import CopyPlan, parse_cp_arg, parse_cp_args
from vmctl.guest.keys import ClientKey, ensure_client_key, fingerprint, host_key_from_line, new_ed25519_keypair
from vmctl.guest.ready import wait_ready
from vmctl.guest.ssh import GuestSession, ssh_command_line

__all__ = [
    "ClientKey", "CopyPlan", "GuestSession", "ensure_client_key", "fingerprint", "host_key_from_line",
    "new_ed25519_keypair", "parse_cp_arg", "parse_cp_args", "ssh_command_line", "wait_ready",
]
