"""The JSON schema of a stack file (``vmctl.yaml``), checked by ``jsonschema`` (Draft 2020-12).

The schema says what each key may hold; what needs the host (an image that exists, a directory
with a Vmfile, a free port) is checked when the stack comes up.
"""

from __future__ import annotations

# A VM's or network's name in the file: it becomes part of a libvirt name and a guest hostname, so
# DNS label rules (lower case, digits, inner dashes), short enough for "<stack>-<name>".
# The patterns end in \Z, not $: jsonschema matches with Python's re, where $ also matches before a
# final newline ("web\n" would pass).
SHORT_NAME = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?\Z"
STACK_NAME = r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?\Z"
DURATION = r"^[0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m)?\Z"
SIZE = {"anyOf": [{"type": "string", "maxLength": 32}, {"type": "integer", "minimum": 1}]}
CONDITIONS = ("started", "ready", "healthy")

_COMMAND = {"anyOf": [
    {"type": "string", "minLength": 1, "maxLength": 4096},
    {"type": "array", "minItems": 1, "maxItems": 256, "items": {"type": "string", "maxLength": 4096}},
]}

_VM = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "image": {"type": "string", "minLength": 1, "maxLength": 512},
        "build": {"anyOf": [
            {"type": "string", "minLength": 1, "maxLength": 4096},
            {"type": "object", "additionalProperties": False, "required": ["context"], "properties": {
                "context": {"type": "string", "minLength": 1, "maxLength": 4096},
                "file": {"type": "string", "minLength": 1, "maxLength": 4096},
                "args": {"type": "object", "maxProperties": 64,
                         "additionalProperties": {"type": ["string", "number", "boolean"]}},
            }},
        ]},
        "cpus": {"type": "integer", "minimum": 1, "maximum": 512},
        "memory": SIZE,
        "disk": SIZE,
        "profile": {"type": "string", "minLength": 1, "maxLength": 64},
        "user": {"type": "string", "minLength": 1, "maxLength": 32},
        "ports": {"type": "array", "maxItems": 64, "items": {"type": ["string", "integer"]}},
        "volumes": {"type": "array", "maxItems": 16, "items": {"type": "string", "minLength": 3, "maxLength": 4096}},
        "user-data": {"anyOf": [
            {"type": "string", "maxLength": 1 << 20},
            {"type": "object", "additionalProperties": False, "required": ["file"],
             "properties": {"file": {"type": "string", "minLength": 1, "maxLength": 4096}}},
        ]},
        "ssh-keys": {"type": "array", "maxItems": 64, "items": {"type": "string", "minLength": 1, "maxLength": 16384}},
        "networks": {"anyOf": [
            {"type": "array", "maxItems": 4, "uniqueItems": True, "items": {"type": "string", "pattern": SHORT_NAME}},
            {"type": "object", "maxProperties": 4, "propertyNames": {"pattern": SHORT_NAME},
             "additionalProperties": {"anyOf": [{"type": "null"}, {
                 "type": "object", "additionalProperties": False,
                 "properties": {"ipv4_address": {"type": "string", "format": "ipv4"}}}]}},
        ]},
        "cpu-shares": {"type": "integer", "minimum": 2, "maximum": 262144},
        "cpu-quota": {"type": "integer", "minimum": 1, "maximum": 51200},
        "memory-limit": SIZE,
        "io-weight": {"type": "integer", "minimum": 100, "maximum": 1000},
        "io-read-bps": {"type": "string", "maxLength": 32},
        "io-write-bps": {"type": "string", "maxLength": 32},
        "depends_on": {"anyOf": [
            {"type": "array", "uniqueItems": True, "maxItems": 64, "items": {"type": "string", "pattern": SHORT_NAME}},
            {"type": "object", "maxProperties": 64, "propertyNames": {"pattern": SHORT_NAME},
             "additionalProperties": {"type": "object", "additionalProperties": False,
                                      "properties": {"condition": {"enum": list(CONDITIONS)}}}},
        ]},
        "healthcheck": {
            "type": "object", "additionalProperties": False, "required": ["test"],
            "properties": {
                "test": _COMMAND,
                "interval": {"type": "string", "pattern": DURATION},
                "timeout": {"type": "string", "pattern": DURATION},
                "retries": {"type": "integer", "minimum": 1, "maximum": 10000},
                "start_period": {"type": "string", "pattern": DURATION},
            },
        },
    },
    "oneOf": [{"required": ["image"], "not": {"required": ["build"]}},
              {"required": ["build"], "not": {"required": ["image"]}}],
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "vmctl stack file",
    "type": "object",
    "additionalProperties": False,
    "required": ["vms"],
    "properties": {
        "name": {"type": "string", "pattern": STACK_NAME},
        "vms": {"type": "object", "minProperties": 1, "maxProperties": 64,
                "propertyNames": {"pattern": SHORT_NAME}, "additionalProperties": _VM},
        "volumes": {"type": "object", "maxProperties": 64, "propertyNames": {"pattern": SHORT_NAME},
                    "additionalProperties": {"anyOf": [{"type": "null"},
                                                       {"type": "object", "additionalProperties": False}]}},
        "networks": {"type": "object", "maxProperties": 16, "propertyNames": {"pattern": SHORT_NAME},
                     "additionalProperties": {"anyOf": [{"type": "null"}, {
                         "type": "object", "additionalProperties": False,
                         "properties": {"subnet": {"type": "string", "maxLength": 43},
                                        "internal": {"type": "boolean"}}}]}},
    },
}
