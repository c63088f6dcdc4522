"""Text files a user hands to vmctl (user-data, public keys, profiles, config, recipes, catalogs).

Each is read through :func:`read_text`: bounded in size, decoded as UTF-8 (no NUL), so a binary or
Latin-1 file is one clear usage error naming the file, never a traceback. :func:`read_toml` adds
TOML parsing with the same promise.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from vmctl.errors import UsageError

MAX_TEXT = 1 << 20   # 1 MiB: far above any profile or user-data cloud-init takes from a seed


def read_text(path: str | Path, what: str, *, limit: int = MAX_TEXT) -> str:
    """The UTF-8 text of `path`; UsageError (naming `what`) if it cannot be read or is not text."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit >> 10} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})") from None
    if "\0" in text:
        raise UsageError(f"{what} {path} contains a NUL byte: it is not a text file")
    return text


def read_toml(path: str | Path, what: str) -> dict:
    """A TOML file as a dict, every failure a UsageError naming the file."""
    text = read_text(path, what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} {path}: {exc}") from None
