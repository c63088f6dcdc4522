"""vmctl's own SSH client key, and the pinned host keys of guests.

vmctl keeps one ed25519 key pair per store (``Paths.keys``): the private key in OpenSSH format, mode
0600, in a 0700 directory, with no ACL entries (QEMU never needs it). It is created once, atomically,
even when several vmctl processes start at the same moment: each writes a complete key under a
temporary name and ``link()``s it to the final name; ``link`` fails if the name exists, so exactly
one key wins and every caller reads that one.

Host keys are never learned from the network: the seed carries the guest's host key, vmctl pins its
public line (``ssh-ed25519 AAAA...``) and compares what the server presents byte for byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # paramiko is imported where it is used: creating a VM needs keys, not a client
    import paramiko

import base64
import binascii
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vmctl.errors import IntegrityError, UsageError
from vmctl.fsutil import atomic_write, private_dirs
from vmctl.perms import secret_file

PRIVATE_NAME = "id_ed25519"
PUBLIC_NAME = "id_ed25519.pub"
COMMENT = "vmctl"

# Key types vmctl accepts as pinned host keys, and the host key algorithms that negotiate each one.
HOST_KEY_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}


@dataclass(frozen=True)
class ClientKey:
    """vmctl's key pair: ``path`` is the private key file, ``public_line`` its authorized_keys line."""

    path: Path
    public_line: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_line)

    def pkey(self) -> "paramiko.PKey":
        """Load the private key for paramiko."""
        import paramiko  # lazy: 180 ms of imports (it pulls in invoke) that create and ls never need

        return paramiko.Ed25519Key.from_private_key_file(str(self.path))


def new_ed25519_keypair(comment: str = COMMENT) -> tuple[bytes, str]:
    """Return a fresh ed25519 key pair: (OpenSSH-format private key bytes, public line with comment).

    Also usable for guest host keys (cloud-init's ``ssh_keys: ed25519_private/ed25519_public``).
    """
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = public.decode("ascii")
    return private, f"{line} {comment}" if comment else line


def _public_line_of(private_path: Path) -> str:
    try:
        key = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"SSH key {private_path} is not a readable OpenSSH private key: {exc}") from None
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode('ascii')} {COMMENT}"


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_client_key(keys_dir: Path) -> ClientKey:
    """Return vmctl's client key in `keys_dir`, creating the directory (0700) and key (0600) once."""
    keys_dir = Path(keys_dir)
    private_dirs(keys_dir)
    os.chmod(keys_dir, 0o700)
    private = keys_dir / PRIVATE_NAME
    if not private.exists():
        key_bytes, _ = new_ed25519_keypair()
        tmp = keys_dir / f".{PRIVATE_NAME}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:
            _write_new(tmp, key_bytes)
            secret_file(tmp)
            try:
                os.link(tmp, private)  # atomic and exclusive: the first process wins
            except FileExistsError:
                pass
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    st = private.lstat()
    if not private.is_file() or private.is_symlink():
        raise IntegrityError(f"SSH key {private} is not a regular file")
    if st.st_mode & 0o077:
        os.chmod(private, 0o600)
    line = _public_line_of(private)
    public = keys_dir / PUBLIC_NAME
    try:
        current = public.read_text().strip()
    except OSError:
        current = None
    if current != line:
        # every writer writes the same line, derived from the winner
        atomic_write(public, (line + "\n").encode(), mode=0o644)
    return ClientKey(path=private, public_line=line)


def parse_public_line(line: str) -> tuple[str, bytes, str]:
    """Split ``TYPE BASE64 [COMMENT]`` into (type, key blob, comment), checking the blob's own type."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise UsageError(f"not an SSH public key line: {line[:60]!r}")
    keytype, b64 = parts[0], parts[1]
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"SSH public key of type {keytype}: its base64 data is invalid") from None
    if len(blob) < 4:
        raise UsageError(f"SSH public key of type {keytype} is truncated")
    (n,) = struct.unpack(">I", blob[:4])
    inner = blob[4 : 4 + n].decode("ascii", "replace")
    if inner != keytype:
        raise UsageError(f"SSH public key line says {keytype} but its data holds {inner}")
    return keytype, blob, parts[2] if len(parts) > 2 else ""


def fingerprint(public_line_or_blob: str | bytes) -> str:
    """OpenSSH's fingerprint of a public key line (or raw blob): ``SHA256:<base64 without padding>``."""
    blob = public_line_or_blob if isinstance(public_line_or_blob, bytes) else parse_public_line(public_line_or_blob)[1]
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def host_key_from_line(line: str) -> "paramiko.PKey":
    """A paramiko public key object for a pinned host key line."""
    import paramiko  # lazy: see ClientKey.pkey

    keytype, blob, _ = parse_public_line(line)
    if keytype not in HOST_KEY_ALGORITHMS:
        raise UsageError(f"unsupported SSH host key type {keytype}")
    return paramiko.PKey.from_type_string(keytype, blob)


def public_line(key: "paramiko.PKey") -> str:
    """``TYPE BASE64`` for a paramiko key (what a server presented)."""
    return f"{key.get_name()} {key.get_base64()}"
