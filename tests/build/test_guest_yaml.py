"""The guest's YAML-subset parser (busybox awk) agrees with PyYAML on what cloud-init users write."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vmctl.config import templates_dir

AWK = templates_dir() / "guest" / "busybox" / "rootfs" / "usr" / "lib" / "vmctl" / "yaml2files.awk"
BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="busybox not installed")


def flatten(node, prefix=""):
    """What yaml2files.awk should produce for a PyYAML-loaded document (keys sanitised)."""
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            k = re.sub(r"[^A-Za-z0-9_.-]", "_", str(k))
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    elif node is None:
        pass
    else:
        out[prefix] = node if isinstance(node, str) else str(node).lower() if isinstance(node, bool) else str(node)
    return out


def parse(text: str, tmp_path: Path) -> dict[str, str]:
    src = tmp_path / "in.yaml"
    src.write_text(text)
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    subprocess.run([BUSYBOX, "awk", "-v", f"out={out}", "-f", str(AWK), str(src)], check=True)
    return {p.name: p.read_text() for p in out.iterdir()}


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFpN9aP2QjlNOzsmzkWhO086kNd6fbFtlUjTV1FqVnHU user@example"
PRIV = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\nAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n"

DOCS = [
    {"hostname": "web-1", "ssh_authorized_keys": [KEY, KEY + "2"]},
    {"ssh_keys": {"ed25519_private": PRIV, "ed25519_public": KEY}},
    {"runcmd": ["echo hi > /tmp/x", ["sh", "-c", "echo 'quoted' \"double\""], "ls -l # not a comment?"]},
    {"write_files": [{"path": "/etc/motd", "content": "hello\nworld\n", "permissions": "0644"},
                     {"path": "/x", "content": "no newline"}]},
    {"hostname": "a: b", "weird": "#hash", "colon": "x:y", "quote": "it's", "dq": 'say "hi"', "empty": ""},
    {"k": "trailing space ", "lead": " leading", "tab": "a\tb", "nl_only": "\n", "multi": "a\n\nb\n\n"},
    {"nested": [[1, 2], [3, [4, 5]]], "num": 3, "bool": True},
    {"instance-id": "iid-123", "local-hostname": "tiny"},
]


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize("style", ["vmctl", "default", "flow_lists"])
def test_matches_pyyaml(doc, style, tmp_path):
    if style == "vmctl":
        from vmctl.seed.cloudconfig import dump_yaml
        text = dump_yaml(doc)
    elif style == "default":
        text = yaml.safe_dump(doc, width=40)  # forces folding of long scalars over several lines
    else:
        text = yaml.safe_dump(doc, default_flow_style=None, width=1000)
        if text.lstrip().startswith("{") or ": {" in text or "- {" in text:
            pytest.skip("flow mappings are outside the guest parser's subset")
    assert yaml.safe_load(text) == doc
    assert parse(text, tmp_path) == flatten(doc)


def test_hand_written_cloud_config(tmp_path):
    text = """#cloud-config
# a comment
hostname: "my-host"   # trailing comment
ssh_authorized_keys:
  - ssh-ed25519 AAAA first
  - 'ssh-rsa BBBB second'
runcmd:
  - [ touch, /root/marker ]
  - echo "a # b" > /tmp/y
  -   - echo
      - two
ssh_keys:
  ed25519_private: |
    -----BEGIN OPENSSH PRIVATE KEY-----
    abc

    def
    -----END OPENSSH PRIVATE KEY-----
  ed25519_public: >-
    ssh-ed25519
    AAAA
final: |+
  keep

"""
    got = parse(text, tmp_path)
    assert got == flatten(yaml.safe_load(text))


GUEST_LIB = AWK.parent


def test_multipart_split_and_runcmd_quoting(tmp_path):
    """mime.awk splits vmctl's multipart user-data; runcmd argv items are quoted for sh."""
    from vmctl.seed import seed_files
    tricky = ["printf '%s\\n' \"$HOME\" > /tmp/o", ["sh", "-c", "echo it's \"q\" $x; echo b", "arg with 'quotes'"]]
    ud = seed_files(instance_id="i", hostname="h", authorized_keys=[KEY],
                    user_data="#!/bin/sh\necho héllo\n", extra_runcmd=tricky)["user-data"]
    src = tmp_path / "user-data"
    src.write_text(ud)
    parts = tmp_path / "parts"
    parts.mkdir()
    subprocess.run([BUSYBOX, "awk", "-v", f"out={parts}", "-f", str(GUEST_LIB / "mime.awk"), str(src)], check=True)
    assert (parts / "001.type").read_text() == "text/cloud-config"
    assert (parts / "002.type").read_text() == "text/x-shellscript"
    assert (parts / "002.encoding").read_text() == "base64"
    import base64
    assert base64.b64decode((parts / "002.body").read_text()).decode() == "#!/bin/sh\necho héllo\n"
    cc = tmp_path / "cc"
    cc.mkdir()
    subprocess.run([BUSYBOX, "awk", "-v", f"out={cc}", "-f", str(AWK), str(parts / "001.body")], check=True)
    assert (cc / "hostname").read_text() == "h"
    script = tmp_path / "runcmd"
    subprocess.run([BUSYBOX, "sh", str(GUEST_LIB / "nocloud.sh"), "runcmd-script", str(cc), str(script)], check=True)
    lines = script.read_text().splitlines()
    assert lines[0] == tricky[0]
    # the argv line, run by sh, gives back exactly the original arguments
    out = subprocess.run([BUSYBOX, "sh", "-c", "set -- " + lines[1] + '; for a; do printf "<%s>" "$a"; done'],
                         capture_output=True, text=True, check=True).stdout
    assert out == "".join(f"<{a}>" for a in tricky[1])


HAND_WRITTEN = [
    "---\nhostname:    spaced   # comment\nurl: http://example.com:8080/x\n...\n",
    "runcmd:\n  # a comment between items\n  - \"quoted: colon\"\n\n  - 'it''s'\n  - |\n    multi\n    line\n  - >-\n    folded\n    text\n",
    "write_files:\n- path: /etc/a\n  content: |\n    line 1\n      indented\n    line 3\n  permissions: '0600'\n- path: /etc/b\n  encoding: b64\n  content: aGVsbG8K\n",
    "empty_list: []\nempty_map: {}\nnull_value:\ntilde: ~\nafter: yes-it-is\n",
    "hostname: crlf\r\nssh_authorized_keys:\r\n  - ssh-ed25519 AAAA crlf@x\r\n",
    "\"quoted key\": v\n'single key': w\nk: \"esc \\\" \\\\ \\t end\"\n",
    "a:\n  b:\n    c:\n    - 1\n    - - 2\n      - 3\n  d: e\nf: g\n",
]


@pytest.mark.parametrize("text", HAND_WRITTEN)
def test_hand_written_subset(text, tmp_path):
    expected = flatten(yaml.safe_load(text.replace("\r\n", "\n")))
    assert parse(text, tmp_path) == expected
