"""Where a guest → host copy lands: nothing the guest sends can reach outside the destination.

The guest is root in its own VM and controls every byte of a copy (the tar stream, the SFTP
server's answers). A `Landing` is the only thing that writes those bytes on the host:

- Everything is first written into a private staging directory (0700) next to the target, through
  directory file descriptors: every path component is opened with ``O_NOFOLLOW``, every file is
  created with ``O_EXCL | O_NOFOLLOW``, so no write, link or mode change ever goes through a
  symbolic link, whatever order the members come in. Names are checked before use: no absolute
  name, no ``..``, no NUL, at most 255 bytes a component, 4096 a path, 256 levels deep.
- Modes are the guest's permission bits without setuid, setgid, sticky or group/other write; a
  directory always keeps ``rwx`` for its owner. Ownership is never taken from the guest. Device
  nodes and FIFOs are not created (counted in the report instead).
- Hard links may only point at a regular file this copy already wrote. Symbolic links are made as
  sent, and at the end every one of them is resolved the way the kernel would (following the
  copy's own links, ``..`` after a link included): a link that would lead outside the copy, or
  is absolute, is removed and counted in the report. No link in the result points outside it.
- Disk use is bounded: writing stops with :class:`ResourceError` when the file system holding the
  destination gets within `reserve` bytes of full; entries are bounded by `max_entries`.
- Only a complete, successful copy is moved into place (a rename, or a merge of renames into an
  existing directory after a conflict check); any failure removes the staging directory, so the
  destination is either untouched or holds the whole copy.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

from vmctl.errors import ConflictError, IntegrityError, ResourceError

MAX_COMPONENT = 255
MAX_PATH = 4096
MAX_DEPTH = 256
MAX_LINK_HOPS = 40          # the kernel's own limit (ELOOP)
RESERVE = 64 << 20          # leave this much free on the destination's file system
SPACE_CHECK_EVERY = 16 << 20
ENTRY_COST = 4096           # what a directory entry, inode or small link may take on disk
CHUNK = 1 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

SKIP_DEVICE = "device nodes and FIFOs (never created from a guest)"
SKIP_OUTSIDE = "symbolic links that lead outside the copy (removed)"
SKIP_LINK_TO_LINK = "hard links to symbolic links"


@dataclass
class CopyReport:
    """What a copy wrote, and what it refused to write and why (reason -> count)."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def warnings(self) -> list[str]:
        return [f"skipped {n} {reason}" for reason, n in sorted(self.skipped.items())]


def file_mode(mode: int) -> int:
    """A guest file's mode on the host: permission bits minus setuid/setgid/sticky and g/o write."""
    return mode & 0o755


def dir_mode(mode: int) -> int:
    return (mode & 0o755) | 0o700


class Landing:
    """One guest → host copy into `target` (a directory tree, or one file with ``single_file``).

    Use as a context manager: ``with Landing(target) as land: ...; land.finish()``; leaving the
    block without `finish` (or with an exception) removes everything staged.
    """

    def __init__(self, target: Path, *, single_file: bool = False, reserve: int = RESERVE,
                 max_entries: int = 1_000_000):
        self.target = Path(os.path.abspath(target))
        self.single_file = single_file
        self.reserve = reserve
        self.max_entries = max_entries
        self.report = CopyReport()
        self.root_mode: int | None = None
        self._entries = 0
        self._since_check = 0
        self._cache: tuple[tuple[str, ...], int] | None = None
        self._finished = False
        self._target_fd: int | None = None   # while finishing a merge: the existing target
        self.parent_fd = os.open(self.target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._check_target()
            self.stage = f".{self.target.name}.vmctl-cp-{os.urandom(6).hex()}"
            os.mkdir(self.stage, 0o700, dir_fd=self.parent_fd)
            self.root_fd = os.open(self.stage, _DIR_FLAGS, dir_fd=self.parent_fd)
        except BaseException:
            os.close(self.parent_fd)
            raise

    # -- lifetime ------------------------------------------------------------------------------
    def __enter__(self) -> "Landing":
        return self

    def __exit__(self, *exc) -> None:
        if not self._finished:
            self.abort()

    def _close_fds(self) -> None:
        self._drop_cache()
        for attr in ("root_fd", "parent_fd"):
            fd = getattr(self, attr, None)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)

    def abort(self) -> None:
        """Remove everything staged (fd-relative: safe against links the guest planted)."""
        if self.parent_fd is None:
            return
        try:
            shutil.rmtree(self.stage, dir_fd=self.parent_fd)
        except FileNotFoundError:
            pass
        finally:
            self._finished = True
            self._close_fds()

    def _check_target(self) -> None:
        try:
            st = os.stat(self.target.name, dir_fd=self.parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise ConflictError(f"{self.target} is a symbolic link: refusing to copy through it")
        if self.single_file and stat.S_ISDIR(st.st_mode):
            raise ConflictError(f"cannot copy a file over the directory {self.target}")
        if not self.single_file and not stat.S_ISDIR(st.st_mode):
            raise ConflictError(f"cannot copy a directory over the file {self.target}")

    # -- names ---------------------------------------------------------------------------------
    def _parts(self, name: str) -> tuple[str, ...]:
        """The checked components of a member name relative to the copy's root."""
        if "\0" in name:
            raise IntegrityError(f"the guest sent a name with a NUL byte: {name[:60]!r}")
        if name.startswith("/"):
            raise IntegrityError(f"the guest sent an absolute name: {name[:60]!r}")
        if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH:
            raise IntegrityError("the guest sent a name longer than 4096 bytes")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        for p in parts:
            if p == "..":
                raise IntegrityError(f"the guest sent a name that climbs out with '..': {name[:60]!r}")
            if len(p.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
                raise IntegrityError("the guest sent a file name longer than 255 bytes")
        if len(parts) > MAX_DEPTH:
            raise IntegrityError(f"the guest sent a path deeper than {MAX_DEPTH} directories")
        return parts

    def _count(self, cost: int = ENTRY_COST) -> None:
        """One more entry: bounded in number, and charged to the disk-space check (directories
        and links take space too, not only file data)."""
        self._entries += 1
        if self._entries > self.max_entries:
            raise IntegrityError(f"the guest sent more than {self.max_entries} entries")
        self._since_check += cost
        if self._since_check >= SPACE_CHECK_EVERY:
            self._since_check = 0
            self.check_space(self.root_fd)

    def _drop_cache(self) -> None:
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None

    def _mkdir(self, comp: str, parent_fd: int) -> None:
        """Make directory `comp` (0700 while staging) in `parent_fd`, counted in the report."""
        try:
            os.mkdir(comp, 0o700, dir_fd=parent_fd)
        except OSError as exc:
            _no_space(exc, self)
            raise
        self.report.dirs += 1

    def _dir_fd(self, parts: tuple[str, ...], *, create: bool = True) -> int:
        """An fd of directory `parts` inside the staging root, made (0700) where missing.

        Never follows a link: a component that is a symlink or a file is a hostile stream (a
        member trying to write through a link an earlier member planted) and refuses the copy.
        The returned fd is owned by the cache (do not close it).
        """
        if not parts:
            return self.root_fd
        if self._cache is not None and self._cache[0] == parts:
            return self._cache[1]
        fd = os.dup(self.root_fd)
        try:
            for comp in parts:
                try:
                    nxt = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    self._mkdir(comp, fd)
                    self._count()
                    nxt = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise IntegrityError(
                            f"the guest sent {'/'.join(parts)[:80]!r} through a symbolic link or a file; "
                            "refused") from None
                    raise
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        self._drop_cache()
        self._cache = (parts, fd)
        return fd

    def _kind(self, dfd: int, comp: str) -> int | None:
        try:
            return stat.S_IFMT(os.stat(comp, dir_fd=dfd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return None

    def _make_room(self, dfd: int, comp: str, parts: tuple[str, ...]) -> None:
        """Remove a non-directory that a later member replaces (never a directory)."""
        kind = self._kind(dfd, comp)
        if kind is None:
            return
        if kind == stat.S_IFDIR:
            raise IntegrityError(f"the guest sent a non-directory over the directory {'/'.join(parts)[:80]!r}")
        os.unlink(comp, dir_fd=dfd)

    # -- space ---------------------------------------------------------------------------------
    def check_space(self, fd: int, need: int = 0) -> None:
        st = os.fstatvfs(fd)
        free = st.f_bavail * st.f_frsize
        if free < need + self.reserve:
            raise ResourceError(
                f"not enough space under {self.target.parent}: {free // (1 << 20)} MiB free, the copy "
                f"needs {max(need, 1) // (1 << 20) + 1} MiB more and vmctl keeps {self.reserve >> 20} MiB "
                "free; nothing was copied")

    # -- entries -------------------------------------------------------------------------------
    def directory(self, name: str, mode: int) -> None:
        parts = self._parts(name)
        self._count()
        if not parts:
            self.root_mode = dir_mode(mode)
            return
        parent = self._dir_fd(parts[:-1])
        comp = parts[-1]
        kind = self._kind(parent, comp)
        if kind is None:
            self._mkdir(comp, parent)
        elif kind != stat.S_IFDIR:
            raise IntegrityError(f"the guest sent a directory over the non-directory {name[:80]!r}")
        fd = os.open(comp, _DIR_FLAGS, dir_fd=parent)
        try:
            os.fchmod(fd, dir_mode(mode))
        finally:
            os.close(fd)

    def file(self, name: str, mode: int, source: BinaryIO | Callable[[Callable[[bytes], None]], None],
             *, size: int | None = None, mtime: int | None = None) -> None:
        """Write one regular file from `source` (a readable, or a function that feeds a writer)."""
        parts = self._parts(name)
        self._count()
        if self.single_file:
            parts = ("content",)
        elif not parts:
            raise IntegrityError("the guest sent a file in place of the copy's root directory")
        parent = self._dir_fd(parts[:-1])
        comp = parts[-1]
        self._make_room(parent, comp, parts)
        try:
            fd = os.open(comp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent)
        except OSError as exc:
            _no_space(exc, self)
            raise
        try:
            if size:
                self.check_space(fd, size)
            writer = _Writer(self, fd)
            if callable(source) and not hasattr(source, "read"):
                source(writer.write)
            else:
                while True:
                    data = source.read(CHUNK)
                    if not data:
                        break
                    writer.write(data)
            os.fchmod(fd, file_mode(mode))
            if mtime is not None:
                try:
                    os.utime(fd, (mtime, mtime))
                except (OverflowError, OSError, ValueError):
                    pass  # an absurd timestamp is not worth refusing the copy for
        finally:
            os.close(fd)
        self.report.files += 1

    def symlink(self, name: str, target: str) -> None:
        parts = self._parts(name)
        self._count(ENTRY_COST + len(target))
        if not parts or self.single_file:
            raise IntegrityError("the guest sent a symbolic link in place of the copy's root")
        if "\0" in target or not target or len(target.encode("utf-8", "surrogateescape")) > MAX_PATH:
            raise IntegrityError(f"the guest sent a malformed link target for {name[:60]!r}")
        parent = self._dir_fd(parts[:-1])
        self._make_room(parent, parts[-1], parts)
        try:
            os.symlink(target, parts[-1], dir_fd=parent)
        except OSError as exc:
            _no_space(exc, self)
            raise
        self.report.symlinks += 1

    def hardlink(self, name: str, target: str) -> None:
        parts = self._parts(name)
        self._count()
        tparts = self._parts(target)
        if not parts or not tparts or self.single_file:
            raise IntegrityError("the guest sent a hard link in place of the copy's root")
        if parts == tparts:
            raise IntegrityError(f"the guest sent a hard link of {name[:60]!r} to itself")
        try:
            tdir = os.dup(self._dir_fd(tparts[:-1], create=False))
        except FileNotFoundError:
            raise IntegrityError(f"the guest sent a hard link to {target[:60]!r}, which it never sent") from None
        try:
            kind = self._kind(tdir, tparts[-1])
            if kind == stat.S_IFLNK:
                self.report.skip(SKIP_LINK_TO_LINK)
                return
            if kind != stat.S_IFREG:
                raise IntegrityError(f"the guest sent a hard link to {target[:60]!r}, which is not a file it sent")
            parent = self._dir_fd(parts[:-1])
            self._make_room(parent, parts[-1], parts)
            try:
                os.link(tparts[-1], parts[-1], src_dir_fd=tdir, dst_dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                _no_space(exc, self)
                raise
        finally:
            os.close(tdir)
        self.report.hardlinks += 1

    def special(self, name: str) -> None:
        """A device node or FIFO: checked like any name, never created."""
        self._parts(name)
        self._count()
        self.report.skip(SKIP_DEVICE)

    # -- the end -------------------------------------------------------------------------------
    def finish(self) -> CopyReport:
        """Drop escaping links, then move the copy into place; return the report."""
        self._drop_cache()
        try:
            if self.single_file:
                if self._kind(self.root_fd, "content") != stat.S_IFREG:
                    raise IntegrityError("the guest sent no file")
                self._check_target()
                os.rename("content", self.target.name, src_dir_fd=self.root_fd, dst_dir_fd=self.parent_fd)
                os.rmdir(self.stage, dir_fd=self.parent_fd)
            else:
                self._check_target()
                if self._kind(self.parent_fd, self.target.name) is not None:
                    self._target_fd = os.open(self.target.name, _DIR_FLAGS, dir_fd=self.parent_fd)
                # links are judged in the tree as it will be: the copy over what DEST holds
                self._drop_escaping_links(self.root_fd, (), 0)
                if self._target_fd is None:
                    os.fchmod(self.root_fd, self.root_mode if self.root_mode is not None else 0o755)
                    os.rename(self.stage, self.target.name, src_dir_fd=self.parent_fd, dst_dir_fd=self.parent_fd)
                else:
                    # an existing directory keeps its own modes: the copy adds and replaces entries
                    self._merge_check(self.root_fd, self._target_fd, (), 0)
                    self._merge(self.root_fd, self._target_fd, 0)
                    shutil.rmtree(self.stage, dir_fd=self.parent_fd)
        except BaseException:
            self.abort()
            raise
        finally:
            if self._target_fd is not None:
                os.close(self._target_fd)
                self._target_fd = None
        self._finished = True
        self._close_fds()
        return self.report

    def _drop_escaping_links(self, dfd: int, here: tuple[str, ...], depth: int) -> None:
        with os.scandir(dfd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in it]
        for name, is_dir, is_link in entries:
            if is_link:
                target = os.readlink(name, dir_fd=dfd)
                if not self._resolves_inside(here, target):
                    os.unlink(name, dir_fd=dfd)
                    self.report.symlinks -= 1
                    self.report.skip(SKIP_OUTSIDE)
            elif is_dir and depth < MAX_DEPTH:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                try:
                    self._drop_escaping_links(sub, (*here, name), depth + 1)
                finally:
                    os.close(sub)

    def _readlink(self, parts: tuple[str, ...]) -> str | None:
        """The target of `parts` if it is a symbolic link in the tree as it will be after the
        copy (the staged entry, else what the existing destination holds there), else None."""
        for root in (self.root_fd, self._target_fd):
            if root is None:
                continue
            dfd = _open_parts(root, parts[:-1])
            if dfd is None:
                continue
            try:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
                return os.readlink(parts[-1], dir_fd=dfd) if stat.S_ISLNK(st.st_mode) else None
            except OSError:
                continue  # not in this tree: perhaps in the next
            finally:
                os.close(dfd)
        return None

    def _resolves_inside(self, where: tuple[str, ...], target: str) -> bool:
        """Whether a link in directory `where` with `target` resolves inside the copy, following
        the copy's links as the kernel would (so ``x -> .`` then ``y -> x/..`` is caught)."""
        if target.startswith("/"):
            return False
        hops = 0
        stack = list(where)                       # resolved components, never a link
        todo = [p for p in target.split("/") if p not in ("", ".")]
        todo.reverse()                            # a stack: next component last
        while todo:
            comp = todo.pop()
            if comp == "..":
                if not stack:
                    return False
                stack.pop()
                continue
            candidate = (*stack, comp)
            link = self._readlink(candidate)
            if link is None:
                stack.append(comp)
                continue
            hops += 1
            if hops > MAX_LINK_HOPS or link.startswith("/"):
                return False
            todo.extend(reversed([p for p in link.split("/") if p not in ("", ".")]))
        return True

    def _merge_check(self, sfd: int, tfd: int, here: tuple[str, ...], depth: int) -> None:
        """Refuse before renaming anything if a directory would replace a non-directory (or back)."""
        with os.scandir(sfd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in entries:
            kind = self._kind(tfd, name)
            if kind is None:
                continue
            shown = posixpath.join(str(self.target), *here, name)
            if is_dir and kind != stat.S_IFDIR:
                raise ConflictError(f"cannot overwrite the non-directory {shown} with a directory")
            if not is_dir and kind == stat.S_IFDIR:
                raise ConflictError(f"cannot overwrite the directory {shown} with a non-directory")
            if is_dir and depth < MAX_DEPTH:
                s2 = os.open(name, _DIR_FLAGS, dir_fd=sfd)
                t2 = os.open(name, _DIR_FLAGS, dir_fd=tfd)
                try:
                    self._merge_check(s2, t2, (*here, name), depth + 1)
                finally:
                    os.close(s2)
                    os.close(t2)

    def _merge(self, sfd: int, tfd: int, depth: int) -> None:
        with os.scandir(sfd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in entries:
            kind = self._kind(tfd, name)
            if is_dir and kind == stat.S_IFDIR:
                s2 = os.open(name, _DIR_FLAGS, dir_fd=sfd)
                t2 = os.open(name, _DIR_FLAGS, dir_fd=tfd)
                try:
                    self._merge(s2, t2, depth + 1)
                finally:
                    os.close(s2)
                    os.close(t2)
            else:
                os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=tfd)


def _open_parts(root: int, parts: tuple[str, ...]) -> int | None:
    """An fd of directory `parts` under `root`, every component opened without following a
    link; None when a component is missing, a link or not a directory."""
    fd = os.dup(root)
    for comp in parts:
        try:
            nxt = os.open(comp, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


def _no_space(exc: OSError, landing: "Landing") -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise ResourceError(f"the file system under {landing.target.parent} is full; nothing was copied") from None


class _Writer:
    """Writes one staged file, checking free space as it grows."""

    def __init__(self, landing: Landing, fd: int):
        self.landing, self.fd = landing, fd

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ResourceError(f"the file system under {self.landing.target.parent} is full; "
                                        "nothing was copied") from None
                raise
            view = view[n:]
        land = self.landing
        land.report.bytes += len(data)
        land._since_check += len(data)
        if land._since_check >= SPACE_CHECK_EVERY:
            land._since_check = 0
            land.check_space(self.fd)
        return len(data)
