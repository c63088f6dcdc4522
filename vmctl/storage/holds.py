"""Holds: who keeps an image alive (``instance:web1``, ``snapshot:web1/pre-upgrade``, ...).

One file per (image, holder): ``holds/<image hex>/<holder, percent-encoded>``, written atomically
under the store lock. A file per hold (rather than one JSON list) means two holders never rewrite
each other's entries, and a crash leaves either the hold or nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import quote, unquote

from vmctl.errors import UsageError
from vmctl.fsutil import atomic_write, fsync_dir
from vmctl.storage.digest import hex_of
from vmctl.storage.index import now_rfc3339

_HOLDER = re.compile(r"[a-z][a-z0-9-]*:[A-Za-z0-9_.:/@+-]{1,255}")


def check_holder(holder: str) -> str:
    if not isinstance(holder, str) or not _HOLDER.fullmatch(holder) or ".." in holder:
        raise UsageError(f"invalid holder {holder!r}: expected KIND:NAME, e.g. instance:web1")
    return holder


class Holds:
    def __init__(self, root: Path):
        self.root = root

    def _dir(self, image_id: str) -> Path:
        return self.root / hex_of(image_id)

    def add(self, image_id: str, holder: str) -> bool:
        """Record the hold; return False if it already existed. Caller holds the store lock."""
        d = self._dir(image_id)
        path = d / quote(check_holder(holder), safe="")
        if path.exists():
            return False
        d.mkdir(mode=0o700, exist_ok=True)
        atomic_write(path, json.dumps({"holder": holder, "since": now_rfc3339()}).encode())
        fsync_dir(self.root)
        return True

    def remove(self, image_id: str, holder: str) -> bool:
        d = self._dir(image_id)
        path = d / quote(check_holder(holder), safe="")
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(d)
        try:
            d.rmdir()
        except OSError:
            pass
        return True

    def holders(self, image_id: str) -> list[str]:
        try:
            names = [p.name for p in self._dir(image_id).iterdir()]
        except FileNotFoundError:
            return []
        return sorted(unquote(n) for n in names if not n.startswith("."))

    def all(self) -> dict[str, list[str]]:
        """image id -> holders, for every image with at least one hold."""
        out: dict[str, list[str]] = {}
        try:
            dirs = list(self.root.iterdir())
        except FileNotFoundError:
            return out
        for d in dirs:
            if d.is_dir() and re.fullmatch(r"[0-9a-f]{64}", d.name):
                holders = self.holders(f"sha256:{d.name}")
                if holders:
                    out[f"sha256:{d.name}"] = holders
        return out

    def drop_all(self, image_id: str) -> None:
        shutil.rmtree(self._dir(image_id), ignore_errors=True)
