"""The only room that imports libvirt: connections, defines, lifecycle calls, probes."""

from vmctl.backend.connection import Backend, open_backend

__all__ = ["Backend", "open_backend"]
