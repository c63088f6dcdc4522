"""``index.json``: which manifests are images of this store, and which tags point at them.

The index is small JSON rewritten whole through a temporary file and ``rename`` (atomic), only while
the store lock is held. Readers read it without a lock and always see one complete version.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from vmctl.errors import IntegrityError
from vmctl.fsutil import atomic_write
from vmctl.storage.digest import is_digest

SCHEMA = 1


@dataclass
class Index:
    images: dict[str, dict] = field(default_factory=dict)          # id -> {"added": rfc3339}
    repositories: dict[str, dict[str, str]] = field(default_factory=dict)  # repo -> tag -> id

    @classmethod
    def load(cls, path: Path) -> "Index":
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise IntegrityError(f"{path} is not valid JSON ({exc}); the store index is damaged") from None
        if not isinstance(data, dict) or data.get("schemaVersion") != SCHEMA:
            raise IntegrityError(f"{path}: unknown index schema {data.get('schemaVersion')!r}")
        images = data.get("images", {})
        repos = data.get("repositories", {})
        if not all(is_digest(k) for k in images) or not all(
            is_digest(v) for tags in repos.values() for v in tags.values()
        ):
            raise IntegrityError(f"{path}: malformed digest in the store index")
        return cls(images=images, repositories=repos)

    def save(self, path: Path) -> None:
        data = {"schemaVersion": SCHEMA, "images": self.images, "repositories": self.repositories}
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode() + b"\n")

    def copy(self) -> "Index":
        return Index(copy.deepcopy(self.images), copy.deepcopy(self.repositories))

    # -- queries ---------------------------------------------------------------------------
    def lookup(self, repo: str, tag: str) -> str | None:
        return self.repositories.get(repo, {}).get(tag)

    def tags_of(self, image_id: str) -> list[str]:
        return sorted(
            f"{repo}:{tag}" for repo, tags in self.repositories.items()
            for tag, target in tags.items() if target == image_id
        )

    # -- changes (caller holds the store lock) -------------------------------------------------
    def add_image(self, image_id: str) -> None:
        self.images.setdefault(image_id, {"added": now_rfc3339()})

    def tag(self, repo: str, tag: str, image_id: str) -> str | None:
        """Point repo:tag at `image_id`; return the id it pointed at before (or None)."""
        previous = self.lookup(repo, tag)
        self.repositories.setdefault(repo, {})[tag] = image_id
        return previous

    def untag(self, repo: str, tag: str) -> str | None:
        tags = self.repositories.get(repo)
        if not tags or tag not in tags:
            return None
        previous = tags.pop(tag)
        if not tags:
            del self.repositories[repo]
        return previous

    def untag_all(self, image_id: str) -> list[str]:
        removed = self.tags_of(image_id)
        for ref in removed:
            repo, tag = ref.rsplit(":", 1)
            self.untag(repo, tag)
        return removed

    def drop_image(self, image_id: str) -> None:
        self.untag_all(image_id)
        self.images.pop(image_id, None)


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
