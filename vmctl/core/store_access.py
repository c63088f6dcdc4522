"""Opening the image store for a set of settings (the one place that decides its QEMU user)."""

from __future__ import annotations

from vmctl.config import Settings


def open_store(settings: Settings):
    """The image store under ``settings.root``, sharing read access with QEMU's user."""
    from vmctl.storage.store import ImageStore

    return ImageStore.from_settings(settings)
