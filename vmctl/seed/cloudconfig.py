"""cloud-init documents: YAML dumped safely, a user's user-data merged with vmctl's keys.

All YAML is produced by PyYAML's safe dumper from Python values, never by string formatting, so a
hostname or key cannot smuggle in YAML. Multi-line strings are written as ``|`` literal blocks
and lines are never wrapped, which keeps the output easy for the guest's small parser as well.
"""

from __future__ import annotations

import email
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import yaml

from vmctl.errors import UsageError

CLOUD_CONFIG_HEADER = "#cloud-config\n"

#: user-data first lines cloud-init understands, and the MIME type of a part that holds them.
_PART_TYPES = {
    "#!": "text/x-shellscript",
    "#cloud-config": "text/cloud-config",
    "#cloud-boothook": "text/cloud-boothook",
    "#include": "text/x-include-url",
    "#part-handler": "text/part-handler",
    "## template: jinja": "text/jinja2",
}


class _Dumper(yaml.SafeDumper):
    """Safe dumper writing multi-line strings as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # A literal block cannot hold trailing spaces on a line or control characters faithfully;
    # PyYAML falls back to a quoted style by itself when it must.
    style = "|" if "\n" in value.rstrip("\n") or value.endswith("\n") and len(value) > 1 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any) -> str:
    """Return ``data`` as block-style YAML: no line wrapping, literal blocks for multi-line text."""
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False,
                     width=2**31 - 1, allow_unicode=True)


def cloud_config(data: dict[str, Any]) -> str:
    """Return ``data`` as a ``#cloud-config`` document."""
    return CLOUD_CONFIG_HEADER + dump_yaml(data)


def user_data_kind(text: str) -> str:
    """Classify user-data like cloud-init: a MIME type, ``multipart`` or ``unknown``."""
    first = text.lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    head = text.lstrip()[:200].lower()
    if head.startswith("content-type:") or head.startswith("mime-version:"):
        return "multipart"
    for prefix, kind in _PART_TYPES.items():
        if first.startswith(prefix):
            return kind
    return "unknown"


def parse_cloud_config(text: str) -> dict[str, Any]:
    """Parse a ``#cloud-config`` document into a mapping; raise ``UsageError`` if it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"user-data is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError("#cloud-config user-data must be a YAML mapping")
    return data


def merge(user: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Merge vmctl's keys into a user's cloud-config the way cloud-init merges parts.

    Lists are appended (the user's items first), mappings are merged recursively with vmctl's
    values winning (so pinned host keys stay pinned), and other user values win over vmctl's
    (a ``hostname`` the user asks for is kept).
    """
    merged = dict(user)
    for key, value in ours.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], list) and isinstance(value, list):
            merged[key] = [*merged[key], *value]
        elif isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
    return merged


def _part(text: str, mime: str, filename: str) -> MIMEText:
    maintype, subtype = mime.split("/", 1)
    try:
        text.encode("ascii")
        charset = "us-ascii"
    except UnicodeEncodeError:
        charset = "utf-8"
    part = MIMEText(text, subtype, charset)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


def multipart(parts: list[tuple[str, str, str]]) -> str:
    """Return a ``multipart/mixed`` user-data from ``(text, mime_type, filename)`` parts."""
    message = MIMEMultipart("mixed")
    for text, mime, filename in parts:
        message.attach(_part(text, mime, filename))
    return message.as_string() + "\n"


def combine_user_data(ours: dict[str, Any], user_data: str | None) -> str:
    """Return the user-data to ship: vmctl's cloud-config combined with the user's own.

    A user ``#cloud-config`` is merged (see ``merge``); a script or any other single-part format
    becomes a second part of a MIME multipart message next to vmctl's cloud-config part; a user
    multipart message gets vmctl's cloud-config appended as one more part.
    """
    if user_data is None or not user_data.strip():
        return cloud_config(ours)
    kind = user_data_kind(user_data)
    if kind == "text/cloud-config":
        return cloud_config(merge(parse_cloud_config(user_data), ours))
    if kind == "multipart":
        message = email.message_from_string(user_data)
        if not message.is_multipart():
            raise UsageError("user-data has MIME headers but is not a multipart message")
        message.attach(_part(cloud_config(ours), "text/cloud-config", "vmctl.cfg"))
        return message.as_string() + "\n"
    if kind == "unknown":
        raise UsageError("user-data must start with '#cloud-config', '#!' or be MIME multipart")
    return multipart([(cloud_config(ours), "text/cloud-config", "vmctl.cfg"),
                      (user_data, kind, "user-script" if kind == "text/x-shellscript" else "user-data")])
