"""SSH host keys that vmctl generates for a guest, so it knows the guest's identity before boot."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

#: cloud-init ``ssh_keys`` key prefix per OpenSSH key type.
_CLOUD_INIT_NAME = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa",
                    "ecdsa-sha2-nistp384": "ecdsa", "ecdsa-sha2-nistp521": "ecdsa"}


@dataclass(frozen=True)
class HostKey:
    """One host key pair: OpenSSH private key (PEM-like text) and its public line ``type base64``."""

    private_openssh: str
    public: str

    @property
    def key_type(self) -> str:
        """The OpenSSH key type, e.g. ``ssh-ed25519``."""
        return self.public.split()[0]

    @property
    def cloud_init_name(self) -> str:
        """The prefix cloud-init uses in ``ssh_keys`` (``ed25519`` → ``ed25519_private``)."""
        return _CLOUD_INIT_NAME[self.key_type]

    @property
    def fingerprint(self) -> str:
        """``SHA256:<base64, no padding>`` as ``ssh-keygen -l`` and the guest's console print it."""
        blob = base64.b64decode(self.public.split()[1])
        return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")

    def __post_init__(self) -> None:
        parts = self.public.split()
        if len(parts) < 2 or parts[0] not in _CLOUD_INIT_NAME or "\n" in self.public.strip():
            raise ValueError("public host key must be one line 'TYPE BASE64 [comment]'")
        if not self.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----"):
            raise ValueError("private host key must be in OpenSSH format")


def generate_host_key() -> HostKey:
    """Generate a fresh ed25519 host key (OpenSSH private format, unencrypted)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return HostKey(private_openssh=private, public=public)
