"""Copying files and directories to and from a guest (the ``put``/``get`` half of `GuestSession`).

SFTP is used when the server offers it (OpenSSH cloud images); otherwise plain exec channels
(dropbear on vmctl's tiny busybox guest has no SFTP server): ``cat > path`` / ``cat < path`` for
files, ``tar`` streams for directories. Both follow ``docker cp``: a destination that is an existing
directory receives the source under its own name; otherwise the destination names the copy.

The guest is hostile (see SECURITY.md). Guest → host: every byte it sends, on either path, is
written by a :class:`~vmctl.guest.landing.Landing` (nothing outside the destination, no link out
of it, no devices, no setuid or group/world-writable modes, bounded disk use, all or nothing), and
tar streams are read by vmctl's bounded :mod:`vmctl.tarstream` reader, the same on every Python.
Host → guest: the source tree is walked without following any symbolic link inside it (each file
is opened with ``O_NOFOLLOW`` and must be the file that was listed); only the path the user named
is followed.
"""

from __future__ import annotations

import io
import os
import posixpath
import shlex
import stat
import tarfile
from pathlib import Path
from typing import Iterator

import paramiko

from vmctl.errors import ConflictError, ExternalToolError, IntegrityError, NotFoundError, UsageError
from vmctl.guest.channels import CHUNK, ChannelReader, ChannelWriter, settle
from vmctl.guest.landing import CopyReport, Landing
from vmctl.tarstream import DIRECTORY, HARDLINK, REGULAR, SYMLINK, TarReader

SFTP_PREFETCH = 64  # outstanding SFTP reads per file: bounded memory, full speed
MAX_LISTING = 200_000  # entries of one guest directory held at once (small tuples: ~30 MB)


def _rq(path: str) -> str:
    """Quote a remote path for the guest's shell; a leading '-' can never become an option."""
    if path.startswith("-"):
        path = "./" + path
    return shlex.quote(path)


# -- the host side of uploads ---------------------------------------------------------------------

def _open_nofollow(path: str, st: os.stat_result):
    """Open a regular file listed as `st` without following a link swapped in since."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
        os.close(fd)
        raise ConflictError(f"{path} changed while it was being copied")
    return os.fdopen(fd, "rb")


def walk_local(root: Path) -> Iterator[tuple[str, os.stat_result, str]]:
    """(relative path, lstat, absolute path) of `root` and everything under it, parents first.

    Symbolic links inside the tree are listed as links, never followed (``root`` itself, which
    the user named, is).
    """
    stack = [("", str(root))]
    yield ".", os.stat(root), str(root)
    while stack:
        rel, path = stack.pop()
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            erel = f"{rel}/{entry.name}" if rel else entry.name
            yield erel, st, entry.path
            if stat.S_ISDIR(st.st_mode):
                subdirs.append((erel, entry.path))
        stack.extend(reversed(subdirs))


def _tar_upload(fileobj, root: Path) -> None:
    """Write `root` as a tar stream (owner-free, no devices, links as links) to `fileobj`."""
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.GNU_FORMAT) as tf:
        for rel, st, path in walk_local(root):
            info = tarfile.TarInfo("." if rel == "." else f"./{rel}")
            info.mode = stat.S_IMODE(st.st_mode)
            info.mtime = int(st.st_mtime)
            info.uid = info.gid = 0
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tf.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                with _open_nofollow(path, st) as fh:
                    info.size = os.fstat(fh.fileno()).st_size
                    tf.addfile(info, fh)
            # sockets, FIFOs and devices on the host are not copied


def unpack(fileobj, land: Landing, what: str) -> None:
    """Land every member of the tar stream `fileobj` (from a guest) through `land`."""
    for member, data in TarReader(fileobj, what=what):
        if member.kind == REGULAR:
            land.file(member.name, member.mode, data, size=member.size, mtime=member.mtime)
        elif member.kind == DIRECTORY:
            land.directory(member.name, member.mode)
        elif member.kind == SYMLINK:
            land.symlink(member.name, member.linkname)
        elif member.kind == HARDLINK:
            land.hardlink(member.name, member.linkname)
        else:
            land.special(member.name)


class FileCopy:
    """Mixin of `GuestSession`: needs ``self.sftp()``-detection state, ``_exec_checked`` and ``where``."""

    last_report: CopyReport | None = None

    # -- sftp detection ---------------------------------------------------------------------

    def sftp(self) -> paramiko.SFTPClient | None:
        """The SFTP client, or None when the server has no SFTP (or the fallback was chosen)."""
        if self.sftp_mode is False:
            return None
        if self._sftp is not None or self._sftp_tried:
            return self._sftp
        self._sftp_tried = True
        chan = None
        try:
            chan = self.transport.open_session(timeout=self.timeout)
            chan.settimeout(self.timeout)
            chan.invoke_subsystem("sftp")
            client = paramiko.SFTPClient(chan)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if chan is not None:
                settle(chan)
            if self.sftp_mode:
                raise ExternalToolError("sftp", f"{self.where}: the guest offers no SFTP: {exc}") from None
            return None
        self._sftp = client
        return client

    # -- remote file system queries ------------------------------------------------------

    def _remote_stat(self, path: str) -> tuple[str | None, int | None]:
        """('dir' | 'file' | None, permission bits or None) of a remote path (symlinks followed)."""
        sftp = self.sftp()
        if sftp is not None:
            try:
                st = sftp.stat(path)
            except FileNotFoundError:
                return None, None
            except OSError as exc:
                raise ExternalToolError("sftp", f"stat {path}: {exc}") from None
            mode = st.st_mode if isinstance(st.st_mode, int) else 0
            kind = "dir" if stat.S_ISDIR(mode) else "file"
            return kind, stat.S_IMODE(mode)
        q = _rq(path)
        script = (f"if [ -d {q} ]; then printf 'd '; elif [ -e {q} ]; then printf 'f '; else printf 'n '; fi; "
                  f"stat -c %a {q} 2>/dev/null || echo")
        status, out, err = self.output(script)
        words = out[:256].decode("ascii", "replace").split()
        if status != 0 or not words or words[0] not in ("d", "f", "n"):
            raise ExternalToolError("guest", f"cannot inspect {path}: {' '.join(err[-300:].decode(errors='replace').split()) or out[:60]!r}")
        kind = {"d": "dir", "f": "file", "n": None}[words[0]]
        mode = int(words[1], 8) if len(words) > 1 and words[1].isascii() and words[1].isdigit() and len(words[1]) <= 4 else None
        if mode is not None and mode > 0o7777:
            mode = None
        return kind, mode

    # -- put ---------------------------------------------------------------------------------

    def put(self, local: str | Path, remote: str, mode: int | None = None) -> str:
        """Copy a local file or directory (recursively) to the guest; return the remote path written.

        Like ``docker cp``: if `remote` is an existing directory the source goes inside it under its
        own name. Modes are kept (`mode` overrides a file's mode).
        """
        local = Path(local)
        try:
            lst = local.stat()
        except FileNotFoundError:
            raise NotFoundError(f"local path {local} does not exist") from None
        kind, _ = self._remote_stat(remote)
        name = local.resolve().name if local.name in ("", ".", "..") else local.name
        if kind == "dir":
            target = posixpath.join(remote, name)
        elif remote.endswith("/"):
            raise NotFoundError(f"guest directory {remote} does not exist")
        else:
            target = remote
        if stat.S_ISDIR(lst.st_mode):
            tkind, _ = self._remote_stat(target) if target != remote else (kind, None)
            if tkind == "file":
                raise ConflictError(f"cannot copy directory {local} over the guest file {target}")
            self._put_dir(local, target)
        elif stat.S_ISREG(lst.st_mode):
            self._put_file(local, target, stat.S_IMODE(lst.st_mode) if mode is None else mode)
        else:
            raise UsageError(f"{local} is neither a regular file nor a directory")
        return target

    def _put_file(self, local: Path, target: str, mode: int) -> None:
        sftp = self.sftp()
        if sftp is not None:
            try:
                with open(local, "rb") as fh:
                    sftp.putfo(fh, target, file_size=os.fstat(fh.fileno()).st_size)
                sftp.chmod(target, mode)
            except OSError as exc:
                raise ExternalToolError("sftp", f"writing {target}: {exc}") from None
            return

        def feed(chan: paramiko.Channel) -> None:
            with open(local, "rb") as fh:
                while True:
                    data = fh.read(CHUNK)
                    if not data:
                        break
                    chan.sendall(data)

        q = _rq(target)
        self._exec_checked(f"cat > {q} && chmod {mode:04o} {q}", f"writing {target}", feed=feed)

    def _put_dir(self, local: Path, target: str) -> None:
        sftp = self.sftp()
        if sftp is not None:
            self._sftp_put_tree(sftp, local, target)
            return

        def feed(chan: paramiko.Channel) -> None:
            _tar_upload(ChannelWriter(chan), local)

        q = _rq(target)
        self._exec_checked(f"mkdir -p {q} && tar -x -p -o -f - -C {q}", f"unpacking into {target}", feed=feed)

    def _sftp_put_tree(self, sftp: paramiko.SFTPClient, local: Path, target: str) -> None:
        dir_modes: list[tuple[str, int]] = []
        try:
            for rel, st, path in walk_local(local):
                dest = target if rel == "." else posixpath.join(target, rel)
                if stat.S_ISDIR(st.st_mode):
                    try:
                        sftp.mkdir(dest, 0o700)
                    except OSError:
                        if not stat.S_ISDIR(sftp.stat(dest).st_mode or 0):
                            raise
                    dir_modes.append((dest, stat.S_IMODE(st.st_mode)))
                elif stat.S_ISLNK(st.st_mode):
                    try:
                        sftp.remove(dest)
                    except OSError:
                        pass
                    sftp.symlink(os.readlink(path), dest)
                elif stat.S_ISREG(st.st_mode):
                    with _open_nofollow(path, st) as fh:
                        sftp.putfo(fh, dest, file_size=os.fstat(fh.fileno()).st_size)
                    sftp.chmod(dest, stat.S_IMODE(st.st_mode))
            for dest, dmode in reversed(dir_modes):  # deepest first: a read-only parent stays writable until then
                sftp.chmod(dest, dmode)
        except OSError as exc:
            raise ExternalToolError("sftp", f"copying {local} to {target}: {exc}") from None

    # -- get ---------------------------------------------------------------------------------

    def get(self, remote: str, local: str | Path) -> Path:
        """Copy a guest file or directory (recursively) to the host; return the local path written.

        What was skipped (device nodes, links leading outside the copy) is in ``last_report``.
        """
        local = Path(local)
        kind, rmode = self._remote_stat(remote)
        if kind is None:
            raise NotFoundError(f"guest path {remote} does not exist")
        name = posixpath.basename(posixpath.normpath(remote))
        if local.is_dir():
            if name in ("", ".", "..", "/"):
                target = local
            else:
                target = local / name
        elif str(local).endswith("/"):
            raise NotFoundError(f"local directory {local} does not exist")
        else:
            target = local
        if not target.parent.is_dir():
            raise NotFoundError(f"local directory {target.parent} does not exist")
        with Landing(target, single_file=(kind != "dir")) as land:
            if kind == "dir":
                self._get_dir(remote, land)
            else:
                land.file("content", rmode if rmode is not None else 0o644, self._file_source(remote))
            self.last_report = land.finish()
        return target

    def _file_source(self, remote: str):
        """A function that feeds the bytes of guest file `remote` to a writer."""
        sftp = self.sftp()

        def feed(write) -> None:
            if sftp is not None:
                try:
                    sftp.getfo(remote, _WriteOnly(write), max_concurrent_prefetch_requests=SFTP_PREFETCH)
                except OSError as exc:
                    raise ExternalToolError("sftp", f"reading {remote}: {exc}") from None
                return

            def consume(chan: paramiko.Channel) -> None:
                while True:
                    data = chan.recv(CHUNK)
                    if not data:
                        break
                    write(data)
            self._exec_checked(f"cat < {_rq(remote)}", f"reading {remote}", consume=consume)

        return feed

    def _get_dir(self, remote: str, land: Landing) -> None:
        sftp = self.sftp()
        if sftp is not None:
            self._sftp_get_tree(sftp, remote, land, ".", 0)
            return

        def consume(chan: paramiko.Channel) -> None:
            unpack(io.BufferedReader(ChannelReader(chan), CHUNK), land, f"the tar stream of {remote}")

        self._exec_checked(f"tar -c -f - -C {_rq(remote)} .", f"packing {remote}", consume=consume)

    def _sftp_get_tree(self, sftp: paramiko.SFTPClient, remote: str, land: Landing, rel: str, depth: int) -> None:
        try:
            st = sftp.stat(remote) if depth == 0 else None
            if st is not None:
                land.directory(".", st.st_mode if isinstance(st.st_mode, int) else 0o755)
            # One directory is listed completely before any of it is copied (paramiko's listing
            # iterator cannot be nested), as small tuples and at most MAX_LISTING of them.
            listing = []
            for attr in sftp.listdir_iter(remote):
                if len(listing) >= MAX_LISTING:
                    raise IntegrityError(f"the guest's SFTP server listed more than {MAX_LISTING} entries in {remote}")
                listing.append((attr.filename,
                                attr.st_mode if isinstance(attr.st_mode, int) else 0,
                                attr.st_size if isinstance(attr.st_size, int) and attr.st_size >= 0 else None,
                                attr.st_mtime if isinstance(attr.st_mtime, int) else None))
            for name, m, size, mtime in listing:
                if not isinstance(name, str) or not name or name in (".", "..") or "/" in name:
                    raise IntegrityError(f"the guest's SFTP server listed an unsafe name {str(name)[:60]!r} in {remote}")
                src = posixpath.join(remote, name)
                child = name if rel == "." else f"{rel}/{name}"
                if stat.S_ISLNK(m):
                    land.symlink(child, sftp.readlink(src) or "")
                elif stat.S_ISDIR(m):
                    land.directory(child, stat.S_IMODE(m))
                    self._sftp_get_tree(sftp, src, land, child, depth + 1)
                elif stat.S_ISREG(m):
                    land.file(child, stat.S_IMODE(m), self._sftp_feed(sftp, src), size=size, mtime=mtime)
                else:
                    land.special(child)
        except OSError as exc:
            raise ExternalToolError("sftp", f"copying {remote}: {exc}") from None

    @staticmethod
    def _sftp_feed(sftp: paramiko.SFTPClient, src: str):
        def feed(write) -> None:
            sftp.getfo(src, _WriteOnly(write), max_concurrent_prefetch_requests=SFTP_PREFETCH)
        return feed


class _WriteOnly:
    """A file-like ``write`` for paramiko's getfo."""

    def __init__(self, write):
        self.write = write
