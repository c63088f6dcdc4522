"""Image operations that need more than the store alone: builds, and who uses an image."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from vmctl.build.builder import build as run_build
from vmctl.build.recipe import load_recipe, recipe_digest
from vmctl.config import build_cache_dir
from vmctl.core.session import Session
from vmctl.core.snapshot_records import usage as snapshot_usage
from vmctl.core.states import ACTIVE
from vmctl.fsutil import private_dirs
from vmctl.progress import bytes_to_fraction
from vmctl.storage.refs import parse_name
from vmctl.storage.usage import disk_usage as store_usage


@dataclass(frozen=True)
class BuildOutcome:
    image: object
    cached: bool   # the store already had this exact build: nothing was done


def build(session: Session, recipe: str, tag: str | None, progress=None) -> BuildOutcome:
    """Build `recipe` into image `tag` (default ``RECIPE:latest``); a repeated build is a no-op.

    The recipe digest (recipe file, guest files, builder format) is the cache key: when the store
    already holds an image built from it, that image is returned (and tagged if asked).
    """

    loaded = load_recipe(recipe)
    ref = tag or f"{loaded.name}:latest"
    repo, tagname = parse_name(ref)
    digest = recipe_digest(loaded)
    store = session.store
    existing = store.find_build(digest)
    if existing is not None:
        if f"{repo}:{tagname}" not in existing.repo_tags:
            existing = store.tag(existing.id, f"{repo}:{tagname}")
        return BuildOutcome(existing, True)
    cache = build_cache_dir()
    private_dirs(cache)
    with tempfile.TemporaryDirectory(prefix="vmctl-build-", dir=cache) as work:
        result = run_build(loaded.path, cache, Path(work), progress=progress)
    image = store.add_built(result, f"{repo}:{tagname}", progress=bytes_to_fraction(progress))
    return BuildOutcome(image, False)


def disk_usage(session: Session):
    """``vmctl df``: images, instances (active = running or paused) and snapshots."""
    try:
        states = session.backend.list_states()
        active = [name for name, st in states.items() if st.state in ACTIVE]
    except Exception:  # noqa: BLE001 - df still answers without libvirt
        active = None

    return store_usage(session.store, active_instances=active, snapshots=lambda: snapshot_usage(session))
