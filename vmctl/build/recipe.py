"""Image recipes: TOML files in ``templates/recipes/`` naming packages, modules, files and boot.

A recipe's digest is the build cache key: sha256 over the builder's format version, the recipe
file's bytes and every guest file it ships (path and bytes). Changing any of them rebuilds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmctl.config import templates_dir
from vmctl.errors import NotFoundError, UsageError
from vmctl.userfiles import read_toml

#: Bumped whenever the builder's output for the same recipe changes.
FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe; ``path`` is the TOML file and ``base`` the templates dir paths resolve in."""

    name: str
    path: Path
    base: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def boot(self) -> dict[str, Any]:
        return self.data["boot"]

    @property
    def rootfs(self) -> dict[str, Any]:
        return self.data["rootfs"]

    def template(self, rel: str) -> Path:
        """Resolve a path named in the recipe inside the templates directory (never outside)."""
        path = (self.base / rel).resolve()
        if self.base.resolve() not in path.parents and path != self.base.resolve():
            raise UsageError(f"recipe {self.name}: path {rel!r} leaves the templates directory")
        if not path.exists():
            raise NotFoundError(f"recipe {self.name}: {rel} does not exist")
        return path

    def guest_files(self) -> list[tuple[str, Path]]:
        """Every guest file the recipe ships, as ``(name inside templates/, path)``, sorted."""
        files = [(self.boot["initrd_init"], self.template(self.boot["initrd_init"]))]
        tree = self.template(self.rootfs["tree"])
        for p in sorted(tree.rglob("*")):
            if p.is_file():
                files.append((f"{self.rootfs['tree']}/{p.relative_to(tree).as_posix()}", p))
        return sorted(files)


def _require(data: dict[str, Any], where: str, keys: list[str]) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise UsageError(f"recipe {where}: missing {', '.join(missing)}")


def find_recipe(name_or_path: str | Path) -> Path:
    """Return the TOML file for a recipe name (``tiny``) or an explicit path to a ``.toml``."""
    s = str(name_or_path)
    if s.endswith(".toml") or "/" in s:
        path = Path(s)
        if not path.is_file():
            raise NotFoundError(f"recipe file {s} not found")
        return path
    if not _NAME_RE.match(s):
        raise UsageError(f"invalid recipe name {s!r}")
    path = templates_dir() / "recipes" / f"{s}.toml"
    if not path.is_file():
        raise NotFoundError(f"no recipe named {s!r} (looked in {path.parent})")
    return path


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load and check a recipe; relative paths in it resolve against ``templates_dir()``."""
    path = find_recipe(name_or_path)

    data = read_toml(path, "recipe")
    _require(data, str(path), ["name", "boot", "rootfs", "defaults"])
    _require(data["boot"], f"{path} [boot]", ["kind", "kernel_package", "cmdline", "initrd_modules", "initrd_init"])
    _require(data["rootfs"], f"{path} [rootfs]", ["size_mib", "packages", "busybox", "tree"])
    if data["boot"]["kind"] not in ("kernel", "firmware"):
        raise UsageError(f"recipe {path}: boot kind must be 'kernel' or 'firmware'")
    if data["boot"]["kind"] == "firmware":
        _require(data["boot"], f"{path} [boot]", ["bootloader", "bootloader_packages"])
        if data["boot"]["bootloader"] != "grub-pc":
            raise UsageError(f"recipe {path}: the only firmware bootloader is 'grub-pc'")
    if not _NAME_RE.match(data["name"]):
        raise UsageError(f"recipe {path}: invalid name {data['name']!r}")
    base = templates_dir()
    if not path.resolve().is_relative_to(base.resolve()):
        base = path.resolve().parent.parent  # a recipe outside templates/: its own recipes/../
    return Recipe(name=data["name"], path=path, base=base, data=data)


def recipe_digest(name_or_path: str | Path) -> str:
    """The build cache key of a recipe (``sha256:<hex>``), computed without building anything."""
    recipe = name_or_path if isinstance(name_or_path, Recipe) else load_recipe(name_or_path)
    h = hashlib.sha256()
    h.update(f"vmctl-build-format:{FORMAT_VERSION}\n".encode())
    data = recipe.path.read_bytes()
    h.update(b"recipe %d\n" % len(data) + data)
    for name, path in recipe.guest_files():
        content = path.read_bytes()
        h.update(f"file {name} {len(content)}\n".encode() + content)
    return "sha256:" + h.hexdigest()
