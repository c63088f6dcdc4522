"""Copying files and directories to and from a guest (the ``put``/``get`` half of `GuestSession`).

SFTP is used when the server offers it (OpenSSH cloud images); otherwise plain exec channels
(dropbear on vmctl's tiny busybox guest has no SFTP server): ``cat > path`` / ``cat < path`` for
files, ``tar`` streams for directories. Both follow ``docker cp``: a destination that is an existing
directory receives the source under its own name; otherwise the destination names the copy. Modes
are kept. Nothing from the guest is trusted when writing on the host: remote names are checked, tar
members go through a filter that refuses absolute paths, ``..``, links that escape, and device files.
"""

from __future__ import annotations

import io
import os
import posixpath
import shlex
import stat
import tarfile
import tempfile
from pathlib import Path

import paramiko

from vmctl.errors import ConflictError, ExternalToolError, NotFoundError, UsageError
from vmctl.guest.channels import CHUNK, ChannelReader, ChannelWriter, settle


def _rq(path: str) -> str:
    """Quote a remote path for the guest's shell; a leading '-' can never become an option."""
    if path.startswith("-"):
        path = "./" + path
    return shlex.quote(path)


def _check_name(name: str, where: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ExternalToolError("guest", f"refusing unsafe file name {name!r} in {where}")
    return name


def _tar_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """Extraction policy for tar streams from a guest: tarfile's ``data`` filter (no absolute
    names, no ``..``, hard links only inside, no devices, no ownership), except that symlinks may
    point anywhere (``/etc/localtime``) -- nothing is ever written through a link because every
    member's resolved path must stay inside the destination -- and permission bits are kept
    (setuid/setgid/sticky dropped, as for every download)."""
    if member.isdev() or member.isfifo():
        return None
    if member.issym():
        member = tarfile.tar_filter(member, dest)
        return member.replace(uid=None, gid=None, uname=None, gname=None, deep=False)
    filtered = tarfile.data_filter(member, dest)
    if filtered is not None and (filtered.isdir() or filtered.isreg()):
        # keep permission bits as they were (the data filter drops group/other write and directory
        # modes); like every download, only setuid/setgid/sticky are dropped
        filtered = filtered.replace(mode=member.mode & 0o777, deep=False)
    return filtered


def _owner_free(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class FileCopy:
    """Mixin of `GuestSession`: needs ``self.sftp()``-detection state, ``_exec_checked`` and ``where``."""

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
            kind = "dir" if stat.S_ISDIR(st.st_mode or 0) else "file"
            return kind, stat.S_IMODE(st.st_mode or 0)
        q = _rq(path)
        script = (f"if [ -d {q} ]; then printf 'd '; elif [ -e {q} ]; then printf 'f '; else printf 'n '; fi; "
                  f"stat -c %a {q} 2>/dev/null || echo")
        status, out, err = self.output(script)
        words = out.decode("ascii", "replace").split()
        if status != 0 or not words or words[0] not in ("d", "f", "n"):
            raise ExternalToolError("guest", f"cannot inspect {path}: {' '.join(err.decode(errors='replace').split()) or out!r}")
        kind = {"d": "dir", "f": "file", "n": None}[words[0]]
        mode = int(words[1], 8) if len(words) > 1 and words[1].isdigit() else None
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
            with tarfile.open(fileobj=ChannelWriter(chan), mode="w|", format=tarfile.GNU_FORMAT) as tf:
                tf.add(str(local), arcname=".", recursive=True, filter=_owner_free)

        q = _rq(target)
        self._exec_checked(f"mkdir -p {q} && tar -x -p -o -f - -C {q}", f"unpacking into {target}", feed=feed)

    def _sftp_put_tree(self, sftp: paramiko.SFTPClient, local: Path, target: str) -> None:
        try:
            dmode = stat.S_IMODE(local.stat().st_mode)
            try:
                sftp.mkdir(target, 0o700)
            except OSError:
                if not stat.S_ISDIR(sftp.stat(target).st_mode or 0):
                    raise
            for entry in sorted(os.scandir(local), key=lambda e: e.name):
                dest = posixpath.join(target, entry.name)
                if entry.is_symlink():
                    try:
                        sftp.remove(dest)
                    except OSError:
                        pass
                    sftp.symlink(os.readlink(entry.path), dest)
                elif entry.is_dir():
                    self._sftp_put_tree(sftp, Path(entry.path), dest)
                elif entry.is_file():
                    with open(entry.path, "rb") as fh:
                        sftp.putfo(fh, dest, file_size=os.fstat(fh.fileno()).st_size)
                    sftp.chmod(dest, stat.S_IMODE(entry.stat().st_mode))
            sftp.chmod(target, dmode)
        except OSError as exc:
            raise ExternalToolError("sftp", f"copying {local} to {target}: {exc}") from None

    # -- get ---------------------------------------------------------------------------------

    def get(self, remote: str, local: str | Path) -> Path:
        """Copy a guest file or directory (recursively) to the host; return the local path written."""
        local = Path(local)
        kind, rmode = self._remote_stat(remote)
        if kind is None:
            raise NotFoundError(f"guest path {remote} does not exist")
        name = posixpath.basename(posixpath.normpath(remote))
        if local.is_dir():
            if name in ("", ".", "..", "/"):
                target = local
            else:
                target = local / _check_name(name, remote)
        elif str(local).endswith("/"):
            raise NotFoundError(f"local directory {local} does not exist")
        else:
            target = local
        if kind == "dir":
            if target.exists() and not target.is_dir():
                raise ConflictError(f"cannot copy guest directory {remote} over the file {target}")
            self._get_dir(remote, target)
        else:
            self._get_file(remote, target, rmode)
        return target

    def _get_file(self, remote: str, target: Path, mode: int | None) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                sftp = self.sftp()
                if sftp is not None:
                    try:
                        sftp.getfo(remote, fh)
                    except OSError as exc:
                        raise ExternalToolError("sftp", f"reading {remote}: {exc}") from None
                else:
                    def consume(chan: paramiko.Channel) -> None:
                        while True:
                            data = chan.recv(CHUNK)
                            if not data:
                                break
                            fh.write(data)
                    self._exec_checked(f"cat < {_rq(remote)}", f"reading {remote}", consume=consume)
            os.chmod(tmp, (mode if mode is not None else 0o644) & 0o777)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def _get_dir(self, remote: str, target: Path) -> None:
        sftp = self.sftp()
        if sftp is not None:
            self._sftp_get_tree(sftp, remote, target)
            return
        target.mkdir(parents=True, exist_ok=True)

        def consume(chan: paramiko.Channel) -> None:
            reader = io.BufferedReader(ChannelReader(chan), CHUNK)
            with tarfile.open(fileobj=reader, mode="r|") as tf:
                tf.extractall(str(target), filter=_tar_filter)

        self._exec_checked(f"tar -c -f - -C {_rq(remote)} .", f"packing {remote}", consume=consume)

    def _sftp_get_tree(self, sftp: paramiko.SFTPClient, remote: str, target: Path) -> None:
        try:
            st = sftp.stat(remote)
            target.mkdir(exist_ok=True, mode=0o700)
            for attr in sftp.listdir_attr(remote):
                name = _check_name(attr.filename, remote)
                src = posixpath.join(remote, name)
                dest = target / name
                m = attr.st_mode or 0
                if stat.S_ISLNK(m):
                    link = sftp.readlink(src)
                    if dest.is_symlink() or dest.exists():
                        dest.unlink()
                    os.symlink(link, dest)
                elif stat.S_ISDIR(m):
                    if dest.is_symlink():
                        dest.unlink()
                    self._sftp_get_tree(sftp, src, dest)
                elif stat.S_ISREG(m):
                    if dest.is_symlink():
                        dest.unlink()
                    self._get_file(src, dest, stat.S_IMODE(m))
            os.chmod(target, stat.S_IMODE(st.st_mode or 0o755) & 0o777)
        except OSError as exc:
            raise ExternalToolError("sftp", f"copying {remote} to {target}: {exc}") from None
