"""Reading a stack file: bounded, YAML without anchors or duplicate keys, checked by the schema.

Every error is one line that names the file, the line and the key (``vmctl.yaml:7: vms.web.memory:
...``). The YAML is composed into nodes first (PyYAML keeps each node's line) and only then turned
into data, so a key's line is known for any error the schema reports. Aliases are refused before
anything is constructed: a file of a few KiB cannot expand into gigabytes ("billion laughs").
"""

from __future__ import annotations

from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

from vmctl.errors import UsageError
from vmctl.stack.schema import SCHEMA
from vmctl.userfiles import read_text

MAX_FILE = 256 << 10     # a stack of 64 VMs with inline user-data fits many times over
MAX_DEPTH = 32

_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}
_VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


class _Lines:
    """The node tree of the file: the line of any key path."""

    def __init__(self, root: yaml.Node):
        self.root = root

    def line(self, path) -> int:
        node, line = self.root, self.root.start_mark.line + 1
        for key in path:
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == str(key):
                        node, line = v, k.start_mark.line + 1
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _check_nodes(node: yaml.Node, where: str, seen: set[int], depth: int = 0) -> None:
    """Refuse aliases (a node reached twice), duplicate keys, non-string keys and deep nesting."""
    if id(node) in seen:
        raise UsageError(f"{where}:{node.start_mark.line + 1}: YAML anchors and aliases are not supported in a stack file")
    seen.add(id(node))
    if depth > MAX_DEPTH:
        raise UsageError(f"{where}:{node.start_mark.line + 1}: nested too deep")
    if node.tag not in _PLAIN_TAGS:
        raise UsageError(f"{where}:{node.start_mark.line + 1}: YAML tag {node.tag[:60]} is not supported in a stack file")
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == "<<":
                raise UsageError(f"{where}:{k.start_mark.line + 1}: YAML merge keys (<<) are not supported")
            if not isinstance(k, yaml.ScalarNode) or k.tag != "tag:yaml.org,2002:str":
                raise UsageError(f"{where}:{k.start_mark.line + 1}: keys must be plain strings")
            if k.value in keys:
                raise UsageError(f"{where}:{k.start_mark.line + 1}: {k.value} is given twice")
            keys.add(k.value)
            _check_nodes(v, where, seen, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_nodes(item, where, seen, depth + 1)


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


_SIZES = ("memory", "disk", "memory-limit")


def _message(error) -> str:
    """Schema errors in words a user of the file understands."""
    v, path = error.validator, list(error.absolute_path)
    if path and path[-1] in _SIZES and len(path) == 3:
        return f"{error.instance!r} is not a size (e.g. 512M, 2G)"
    if v == "oneOf" and len(path) == 2 and path[0] == "vms":
        return "give exactly one of image: or build:"
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"unknown key {', '.join(extra)}"
    if v == "pattern" and path and path[-1] in ("interval", "timeout", "start_period"):
        return f"{error.instance!r} is not a duration (e.g. 2s, 500ms, 1m)"
    if v == "pattern":
        return f"{error.instance!r} is not a valid name: lower-case letters, digits and inner dashes"
    return error.message


def _deepest(error):
    """For anyOf/oneOf, the alternative's error that got furthest into the value (a wrong type
    at the top is the least telling); the error itself otherwise."""
    while error.validator in ("anyOf", "oneOf") and error.context and not (
            error.validator == "oneOf" and len(error.absolute_path) == 2 and error.absolute_path[0] == "vms") \
            and not (error.absolute_path and error.absolute_path[-1] in _SIZES):
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    return error


def load(path: Path) -> dict:
    """The file's data, checked against the schema; UsageError (one line, with the line) if not."""
    where = str(path)
    text = read_text(path, "stack file", limit=MAX_FILE)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{where}{line}: not valid YAML: {problem}") from None
    if root is None:
        raise UsageError(f"{where}: the file is empty: it needs a vms: mapping")
    _check_nodes(root, where, set())
    data = yaml.SafeLoader(text).get_single_data()   # safe: plain tags, no aliases, bounded size and depth
    lines = _Lines(root)
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: (lines.line(e.absolute_path), e.path))
    if errors:
        e = _deepest(errors[0])
        path = list(e.absolute_path)
        if "propertyNames" in e.schema_path:   # about a key itself: reported at the key
            path.append(e.instance)
        _raise(where, lines, path, _message(e))
    return data


def _raise(where: str, lines: _Lines, path, message: str):
    raise UsageError(f"{where}:{lines.line(path)}: {_dotted(path)}: {message}")
