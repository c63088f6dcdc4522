"""Talking to a running guest over SSH (paramiko): readiness, exec, copy, interactive shell.

This room never imports libvirt: callers pass addresses (or a function that finds one), vmctl's
client key and the guest's pinned host key line. Import the modules (``vmctl.guest.keys``,
``.ssh``, ``.ready``, ``.cp``) directly: this package file imports nothing, so commands that only
need keys (create) do not pay for loading paramiko's SSH client.
"""
