"""Build a bootable image from a recipe: kernel + initramfs + ext4 root on a qcow2 disk.

Layout of ``cache_dir`` (reused across builds)::

    debs/                  .deb files fetched by ``apt-get download``
    extract/<deb stem>/    their contents (``dpkg-deb -x``)
    images/<hex digest>/   finished builds: disk.qcow2, vmlinux (PVH ELF) or vmlinuz, initrd.img,
                           build.json

A finished build directory appears atomically (built under a temporary name in ``work_dir``'s
sibling, then renamed), so an interrupted build never looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from vmctl.build import bootloader, debs, initramfs, kmod
from vmctl.build.elf import read_needed
from vmctl.build.kernel import pvh_kernel
from vmctl.build.recipe import FORMAT_VERSION, Recipe, load_recipe, recipe_digest
from vmctl.build.tools import require, run
from vmctl.errors import NotFoundError, UsageError
from vmctl.fsutil import private_dirs
from vmctl.storage import qemu_img

Progress = Callable[[str, "float | None"], None]
MiB = 1024 * 1024
_LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
#: busybox applets the initramfs script uses (linked to /bin/busybox).
_INITRD_APPLETS = ("sh", "mount", "umount", "insmod", "switch_root", "usleep", "sleep", "cat",
                   "mkdir", "findfs", "chown", "rm", "echo")


@dataclass(frozen=True)
class BuildResult:
    """A finished image build. Paths live in the build cache; copy them before changing them."""

    recipe_digest: str
    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str
    boot_kind: str
    architecture: str
    defaults: dict = field(default_factory=dict)
    cloud_init: bool = True
    user: str = "root"
    labels: dict = field(default_factory=dict)
    recipe: str = ""
    cached: bool = False

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("disk", "kernel", "initrd"):
            d[k] = Path(d[k]).name
        d.pop("cached")
        return d

    @classmethod
    def from_json(cls, directory: Path, d: dict) -> "BuildResult":
        d = dict(d)
        for k in ("disk", "kernel", "initrd"):
            d[k] = directory / d[k]
        return cls(**d, cached=True)


def _noop(_msg: str, _frac: float | None) -> None:
    pass


def build(recipe_name_or_path: str | Path, cache_dir: Path, work_dir: Path,
          progress: Progress | None = None, *, packages_cache: Path | None = None) -> BuildResult:
    """Build the recipe (or return the cached build with the same recipe digest).

    ``cache_dir`` keeps downloads, extractions and finished images across builds; downloads and
    extractions go to ``packages_cache`` instead when given (tests share one across runs while
    building images from scratch). ``work_dir`` holds temporary staging trees and is left clean.
    Raises ``ExternalToolError`` when a tool fails (with its stderr tail), ``NotFoundError`` or
    ``UsageError`` for a bad recipe.
    """
    say = progress or _noop
    recipe = load_recipe(recipe_name_or_path)
    digest = recipe_digest(recipe)
    final = cache_dir / "images" / digest.split(":", 1)[1]
    cached = cached_build(final)
    if cached is not None:
        say(f"cached: {cached.disk}", 1.0)
        return cached

    private_dirs(cache_dir)
    private_dirs(work_dir)
    private_dirs(cache_dir / "images")
    tmp_out = Path(tempfile.mkdtemp(dir=cache_dir / "images", prefix=".build-"))
    staging = Path(tempfile.mkdtemp(dir=work_dir, prefix="rootfs-"))
    try:
        say("resolving packages", 0.0)
        kernel_pkg = debs.resolve_kernel_package(recipe.boot["kernel_package"])
        firmware = recipe.boot["kind"] == "firmware"
        loader_pkgs = list(recipe.boot.get("bootloader_packages", [])) if firmware else []
        packages = [kernel_pkg, *recipe.rootfs["packages"], *loader_pkgs]
        say(f"downloading {len(packages)} packages", 0.05)
        pkg_cache = packages_cache or cache_dir
        deb_files = debs.download(packages, pkg_cache / "debs")
        trees = {}
        for i, pkg in enumerate(packages):
            say(f"extracting {pkg}", 0.1 + 0.3 * i / len(packages))
            trees[pkg] = debs.extract(deb_files[pkg], pkg_cache / "extract")
        kernel_tree = trees.pop(kernel_pkg)
        kernel, modules_root = _kernel_files(kernel_tree)
        loader_trees = [trees.pop(p) for p in loader_pkgs]

        say("writing initramfs", 0.45)
        _write_initrd(recipe, trees, modules_root, tmp_out / "initrd.img")
        kernel_name = _write_kernel(recipe, kernel, tmp_out, say)

        say("assembling root filesystem", 0.55)
        _assemble_rootfs(recipe, trees, modules_root, staging)
        grub_tree = None
        if firmware:
            _add_boot_dir(recipe, staging, kernel, tmp_out / "initrd.img")
            grub_tree = _merge_trees(loader_trees, staging.with_name(staging.name + "-loader"))
        size = int(recipe.rootfs["size_mib"]) * MiB
        say("making ext4 and qcow2", 0.7)
        _make_disk(staging, size, recipe.rootfs.get("label", "root"), work_dir, tmp_out / "disk.qcow2",
                   grub_tree=grub_tree)

        result = BuildResult(
            recipe_digest=digest, disk=final / "disk.qcow2", kernel=final / kernel_name,
            initrd=final / "initrd.img", cmdline=recipe.boot["cmdline"], boot_kind=recipe.boot["kind"],
            architecture=recipe.data.get("architecture", "x86_64"),
            defaults={"cpus": int(recipe.data["defaults"].get("cpus", 1)),
                      "memory_mib": int(recipe.data["defaults"].get("memory_mib", 256)),
                      "disk_bytes": size},
            cloud_init=bool(recipe.data.get("cloud_init", True)), user=recipe.data.get("user", "root"),
            labels={str(k): str(v) for k, v in recipe.data.get("labels", {}).items()},
            recipe=recipe.name)
        meta = result.to_json() | {"format": FORMAT_VERSION, "kernel_package": kernel_pkg,
                                   "built_at": int(time.time())}
        (tmp_out / "build.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp_out, 0o755)
        if final.exists():  # a concurrent build finished first; keep its result
            shutil.rmtree(tmp_out)
        else:
            os.replace(tmp_out, final)
        say(f"built: {final / 'disk.qcow2'}", 1.0)
        return cached_build(final) if final.exists() else result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(staging.with_name(staging.name + "-loader"), ignore_errors=True)
        shutil.rmtree(tmp_out, ignore_errors=True)


def cached_build(directory: Path) -> BuildResult | None:
    """Return the finished build in ``directory``, or ``None`` if it is absent or incomplete."""
    meta = directory / "build.json"
    if not meta.is_file():
        return None
    try:
        d = json.loads(meta.read_text())
    except ValueError:
        return None
    for k in ("format", "kernel_package", "built_at"):
        d.pop(k, None)
    result = BuildResult.from_json(directory, d)
    if not all(p.is_file() for p in (result.disk, result.kernel, result.initrd)):
        return None
    return result


def _kernel_files(tree: Path) -> tuple[Path, Path]:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    roots = sorted((tree / "lib" / "modules").glob("*"))
    if len(kernels) != 1 or len(roots) != 1:
        raise NotFoundError(f"kernel package at {tree} has no single vmlinuz and modules directory")
    return kernels[0], roots[0]


def _write_kernel(recipe: Recipe, bzimage: Path, out: Path, say: Progress) -> str:
    """Write the kernel blob; ``kernel_format = "pvh"`` gives the ELF for PVH boot when possible."""
    fmt = recipe.boot.get("kernel_format", "bzimage")
    if fmt not in ("pvh", "bzimage"):
        raise UsageError(f"recipe {recipe.name}: kernel_format must be 'pvh' or 'bzimage'")
    if fmt == "pvh":
        elf = pvh_kernel(bzimage.read_bytes())
        if elf is not None:
            (out / "vmlinux").write_bytes(elf)
            return "vmlinux"
        say("kernel has no PVH entry point: using its bzImage", None)
    shutil.copyfile(bzimage, out / "vmlinuz")
    return "vmlinuz"


def _busybox(recipe: Recipe, trees: dict[str, Path]) -> Path:
    rel = recipe.rootfs["busybox"].lstrip("/")
    for tree in trees.values():
        if (tree / rel).is_file():
            return tree / rel
    raise NotFoundError(f"recipe {recipe.name}: {recipe.rootfs['busybox']} is in none of its packages")


def _module_bytes(recipe: Recipe, path: Path) -> bytes:
    data = path.read_bytes()
    return kmod.strip_signature(data) if recipe.boot.get("strip_module_signatures", False) else data


def _modules(names: list[str], modules_root: Path) -> list[tuple[str, Path]]:
    index = kmod.module_index(modules_root)
    builtin = kmod.builtin_modules(modules_root)
    try:
        order = kmod.load_order(names, index, builtin)
    except KeyError as exc:
        raise NotFoundError(f"kernel module {exc.args[0]} is not in {modules_root.name}") from exc
    return [(name, index[name]) for name in order]


def _write_initrd(recipe: Recipe, trees: dict[str, Path], modules_root: Path, dest: Path) -> None:
    bb = _busybox(recipe, trees).read_bytes()
    mods = _modules(list(recipe.boot["initrd_modules"]), modules_root)
    # Loaded by /init in the background while the root disk's modules load and it is mounted
    # (their probes sleep: the SATA link reset, say); /init waits for them before switch_root.
    early_names = list(recipe.boot.get("initrd_background_modules", []))
    in_order = {n for n, _ in mods}
    early = [m for m in _modules(early_names, modules_root) if m[0] not in in_order] if early_names else []
    entries = [initramfs.directory(d) for d in ("bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys")]
    entries.append(initramfs.chardev("dev/console", 5, 1))
    entries.append(initramfs.file("bin/busybox", bb, 0o755))
    entries += [initramfs.symlink(f"bin/{a}", "busybox") for a in _INITRD_APPLETS]
    entries.append(initramfs.file("init", recipe.template(recipe.boot["initrd_init"]).read_bytes(), 0o755))
    entries.append(initramfs.file("etc/modules.order", "".join(f"{n}\n" for n, _ in mods).encode()))
    entries += [initramfs.file(f"lib/modules/{n}.ko", _module_bytes(recipe, p)) for n, p in mods]
    if early:
        entries.append(initramfs.file("etc/modules.background", "".join(f"{n}\n" for n, _ in early).encode()))
        entries += [initramfs.file(f"lib/modules/{n}.ko", _module_bytes(recipe, p)) for n, p in early]
    initramfs.write_initramfs(entries, dest, recipe.boot.get("initrd_compression", "gzip"))


def _inside(root: Path, rel: str) -> Path:
    path = root / rel.lstrip("/")
    if root.resolve() not in path.resolve().parents:
        raise UsageError(f"path {rel!r} leaves the root filesystem")
    return path


def _resolve_in_tree(tree: Path, rel: str, depth: int = 0) -> Path | None:
    """Follow symlinks of ``tree/rel`` as if ``tree`` were ``/``; return the regular file."""
    path = tree / rel.lstrip("/")
    if depth > 10 or not os.path.lexists(path):
        return None
    if path.is_symlink():
        target = os.readlink(path)
        if target.startswith("/"):
            return _resolve_in_tree(tree, target, depth + 1)
        return _resolve_in_tree(tree, os.path.normpath(str(Path(rel.lstrip("/")).parent / target)), depth + 1)
    return path if path.is_file() else None


def _find_lib(trees: dict[str, Path], soname: str) -> tuple[str, Path]:
    for tree in trees.values():
        for d in _LIB_DIRS:
            found = _resolve_in_tree(tree, f"{d}/{soname}")
            if found is not None:
                return f"{d}/{soname}", found
    raise NotFoundError(f"shared library {soname} is in none of the recipe's packages; add its package")


def _copy_file(src: Path, dest: Path, mode: int | None = None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    shutil.copyfile(src, dest)
    os.chmod(dest, mode if mode is not None else stat.S_IMODE(src.stat().st_mode))


def _assemble_rootfs(recipe: Recipe, trees: dict[str, Path], modules_root: Path, root: Path) -> None:
    rf = recipe.rootfs
    os.chmod(root, 0o755)
    for d in rf.get("dirs", []):
        _inside(root, d).mkdir(parents=True, exist_ok=True)
    # busybox and its applet links
    bb_src = _busybox(recipe, trees)
    bb_rel = rf["busybox"].lstrip("/")
    _copy_file(bb_src, root / bb_rel, 0o755)
    applets = run([str(bb_src), "--list-full"]).split()
    for applet in applets:
        link = _inside(root, applet)
        if os.path.lexists(link):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / bb_rel, link.parent))
    # dynamic binaries and the closure of their libraries
    queue: list[Path] = []
    for b in rf.get("binaries", []):
        src = next((t / b.lstrip("/") for t in trees.values() if (t / b.lstrip("/")).is_file()), None)
        if src is None:
            raise NotFoundError(f"recipe {recipe.name}: {b} is in none of its packages")
        _copy_file(src, _inside(root, b), 0o755)
        queue.append(src)
    done: set[str] = set()
    while queue:
        needed, interp = read_needed(queue.pop())
        if interp and interp not in done:
            done.add(interp)
            done.add(Path(interp).name)
            rel, src = _find_lib(trees, Path(interp).name)
            _copy_file(src, root / rel, 0o755)
            link = _inside(root, interp)
            if not os.path.lexists(link):
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(os.path.relpath(root / rel, link.parent))
        for soname in needed:
            if soname in done:
                continue
            done.add(soname)
            rel, src = _find_lib(trees, soname)
            _copy_file(src, root / rel)
            queue.append(src)
    # kernel modules loaded by the guest's rcS
    mods = _modules(list(rf.get("modules", [])), modules_root)
    mod_dir = root / "lib" / "modules" / modules_root.name
    mod_dir.mkdir(parents=True, exist_ok=True)
    # and those it loads only when the VM has a shared directory (virtio-9p, virtio-fs device)
    base = {n for n, _ in mods}
    fs_mods = [m for m in _modules(list(rf.get("fs_modules", [])), modules_root) if m[0] not in base]
    # and those vmctl's guest agent loads when it is armed for a checkpoint (virtio-serial)
    base |= {n for n, _ in fs_mods}
    agent_mods = [m for m in _modules(list(rf.get("agent_modules", [])), modules_root) if m[0] not in base]
    for name, path in mods + fs_mods + agent_mods:
        (mod_dir / f"{name}.ko").write_bytes(_module_bytes(recipe, path))
    # guest files: scripts (#!) executable, everything else 0644 unless the recipe says otherwise
    tree = recipe.template(rf["tree"])
    for src in sorted(tree.rglob("*")):
        rel = src.relative_to(tree).as_posix()
        dest = _inside(root, rel)
        if src.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif src.is_file():
            mode = 0o755 if src.read_bytes()[:2] == b"#!" else 0o644
            _copy_file(src, dest, mode)
    (root / "etc" / "vmctl").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "vmctl" / "modules").write_text("".join(f"{n}\n" for n, _ in mods))
    (root / "etc" / "vmctl" / "modules.fs").write_text("".join(f"{n}\n" for n, _ in fs_mods))
    (root / "etc" / "vmctl" / "modules.agent").write_text("".join(f"{n}\n" for n, _ in agent_mods))
    for link, target in rf.get("symlinks", {}).items():
        path = _inside(root, link)
        if os.path.lexists(path):
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    for rel, mode in rf.get("modes", {}).items():
        os.chmod(_inside(root, rel), int(mode, 8))
    if os.geteuid() != 0:
        (root / "etc" / "vmctl" / "chown-on-first-boot").write_text("")


def _add_boot_dir(recipe: Recipe, root: Path, kernel: Path, initrd: Path) -> None:
    """/boot for a firmware-boot image: the kernel (bzImage), the initramfs and grub.cfg."""
    boot = root / "boot"
    (boot / "grub").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernel, boot / "vmlinuz")
    shutil.copyfile(initrd, boot / "initrd.img")
    (boot / "grub" / "grub.cfg").write_text(bootloader.grub_cfg(recipe.boot["cmdline"]))


def _merge_trees(trees: list[Path], merged: Path) -> Path:
    """Make ``merged`` hold the files of several extracted packages (symlinked, not copied)."""
    merged.mkdir()
    for tree in trees:
        for src in tree.rglob("*"):
            dest = merged / src.relative_to(tree)
            if src.is_dir() and not src.is_symlink():
                dest.mkdir(parents=True, exist_ok=True)
            elif not os.path.lexists(dest):
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(src.resolve() if src.is_symlink() else src)
    return merged


def _make_disk(staging: Path, size: int, label: str, work_dir: Path, dest: Path,
               grub_tree: Path | None = None) -> None:
    """``mkfs.ext4 -d`` a sparse raw file from ``staging``, then convert it to qcow2 at ``dest``.

    With ``grub_tree`` the file system goes into an MBR partition at 1 MiB and GRUB is installed
    in front of it (see ``bootloader``); otherwise it fills the whole disk.
    """
    raw = Path(tempfile.mkstemp(dir=work_dir, prefix="root-", suffix=".raw")[1])
    offset = bootloader.PARTITION_OFFSET if grub_tree else 0
    try:
        os.truncate(raw, size)
        run([require("mkfs.ext4", "e2fsprogs"), "-q", "-F", "-L", label[:16], "-m", "1",
             "-E", f"lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0,offset={offset}",
             "-d", str(staging), str(raw), f"{(size - offset) // 1024}k"])
        if grub_tree is not None:
            bootloader.install(raw, grub_tree, work_dir)
        qemu_img.convert(raw, dest, src_fmt="raw", dst_fmt="qcow2")
    finally:
        raw.unlink(missing_ok=True)
