"""A hostile SFTP server (protocol version 3 over stdin/stdout), run by sshd as its sftp subsystem.

It stands for a guest whose root replaced its sftp-server: every answer comes from a scenario file
(JSON) the test writes before each copy. The scenario describes a fake tree:

    {"tree": {"/g/dir": {"type": "dir", "mode": 493},
              "/g/dir/f": {"type": "file", "mode": 420, "data": "hello", "repeat": 1},
              "/g/dir/l": {"type": "link", "target": "/etc"}},
     "listing": {"/g/dir": [{"name": "../../escape", "type": "file", "mode": 420}]},
     "endless": ["/g/dir"]}

``listing`` overrides what READDIR returns for a directory (any names, even "a/b" or ".."); a path in
``endless`` keeps answering READDIR with new entries forever; a file's ``repeat`` of -1 makes READ
never reach EOF. Only what paramiko's client uses is implemented (INIT, STAT, LSTAT, FSTAT, OPENDIR,
READDIR, OPEN, READ, CLOSE, READLINK, REALPATH).
"""

from __future__ import annotations

import json
import struct
import sys

INIT, VERSION, OPEN, CLOSE, READ, LSTAT, FSTAT, OPENDIR, READDIR, STAT, REALPATH, READLINK = (
    1, 2, 3, 4, 5, 7, 8, 11, 12, 17, 16, 19)
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
OK, EOF, NO_SUCH_FILE, FAILURE = 0, 1, 2, 4
S_IFDIR, S_IFREG, S_IFLNK = 0o040000, 0o100000, 0o120000


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def string(b: bytes | str) -> bytes:
    b = b.encode("utf-8", "surrogateescape") if isinstance(b, str) else b
    return u32(len(b)) + b


def attrs(entry: dict) -> bytes:
    kind = {"dir": S_IFDIR, "file": S_IFREG, "link": S_IFLNK}.get(entry.get("type"), entry.get("ifmt", 0))
    size = entry.get("size")
    if size is None and entry.get("type") == "file":
        size = len(entry.get("data", "")) * max(entry.get("repeat", 1), 0)
    flags = 0x4 | 0x8 | (0x1 if size is not None else 0)
    out = u32(flags)
    if size is not None:
        out += struct.pack(">Q", size)
    return out + u32(kind | entry.get("mode", 0o644)) + u32(0) + u32(entry.get("mtime", 0))


class Server:
    def __init__(self, scenario: dict):
        self.tree = scenario.get("tree", {})
        self.listing = scenario.get("listing", {})
        self.endless = set(scenario.get("endless", []))
        self.handles: dict[bytes, dict] = {}
        self.next = 0

    def entry(self, path: str, follow: bool) -> dict | None:
        seen = 0
        e = self.tree.get(path.rstrip("/") or "/")
        while follow and e is not None and e.get("type") == "link" and seen < 8:
            e = self.tree.get(e["target"])
            seen += 1
        return e

    def handle(self, state: dict) -> bytes:
        self.next += 1
        h = b"h%d" % self.next
        self.handles[h] = state
        return h

    def answer(self, kind: int, rid: int, body: bytes) -> bytes:
        if kind == STAT or kind == LSTAT:
            path = body[4:4 + struct.unpack(">I", body[:4])[0]].decode("utf-8", "surrogateescape")
            e = self.entry(path, follow=(kind == STAT))
            return self.status(rid, NO_SUCH_FILE) if e is None else bytes([ATTRS]) + u32(rid) + attrs(e)
        if kind == REALPATH:
            path = body[4:4 + struct.unpack(">I", body[:4])[0]]
            return bytes([NAME]) + u32(rid) + u32(1) + string(path) + string(path) + u32(0)
        if kind == READLINK:
            path = body[4:4 + struct.unpack(">I", body[:4])[0]].decode("utf-8", "surrogateescape")
            e = self.tree.get(path)
            if not e or e.get("type") != "link":
                return self.status(rid, NO_SUCH_FILE)
            return bytes([NAME]) + u32(rid) + u32(1) + string(e["target"]) + string(e["target"]) + u32(0)
        if kind == OPENDIR:
            path = body[4:4 + struct.unpack(">I", body[:4])[0]].decode("utf-8", "surrogateescape").rstrip("/")
            if path in self.listing:
                names = list(self.listing[path])
            else:
                prefix = path + "/"
                names = [{"name": p[len(prefix):], **e} for p, e in self.tree.items()
                         if p.startswith(prefix) and "/" not in p[len(prefix):]]
            h = self.handle({"dir": path, "names": names, "sent": False, "n": 0})
            return bytes([HANDLE]) + u32(rid) + string(h)
        if kind == READDIR:
            st = self.handles.get(body[4:4 + struct.unpack(">I", body[:4])[0]])
            if st is None:
                return self.status(rid, FAILURE)
            if st["dir"] in self.endless:
                st["n"] += 1
                batch = [{"name": f"e{st['n']}-{i}", "type": "dir", "mode": 0o755} for i in range(100)]
            elif st["sent"]:
                return self.status(rid, EOF)
            else:
                st["sent"] = True
                batch = st["names"]
                if not batch:
                    return self.status(rid, EOF)
            out = bytes([NAME]) + u32(rid) + u32(len(batch))
            for e in batch:
                out += string(e["name"]) + string(e["name"]) + attrs(e)
            return out
        if kind == OPEN:
            path = body[4:4 + struct.unpack(">I", body[:4])[0]].decode("utf-8", "surrogateescape")
            e = self.entry(path, follow=True)
            if e is None or e.get("type") != "file":
                return self.status(rid, NO_SUCH_FILE)
            h = self.handle({"file": e})
            return bytes([HANDLE]) + u32(rid) + string(h)
        if kind == FSTAT:
            st = self.handles.get(body[4:4 + struct.unpack(">I", body[:4])[0]])
            if st is None or "file" not in st:
                return self.status(rid, FAILURE)
            return bytes([ATTRS]) + u32(rid) + attrs(st["file"])
        if kind == READ:
            hl = struct.unpack(">I", body[:4])[0]
            st = self.handles.get(body[4:4 + hl])
            offset, length = struct.unpack(">QI", body[4 + hl:4 + hl + 12])
            if st is None or "file" not in st:
                return self.status(rid, FAILURE)
            e = st["file"]
            data = e.get("data", "").encode()
            repeat = e.get("repeat", 1)
            total = None if repeat < 0 else len(data) * repeat
            if total is not None and offset >= total:
                return self.status(rid, EOF)
            unit = data or b"\0"
            start = offset % len(unit)
            chunk = (unit * (length // len(unit) + 2))[start:start + length]
            if total is not None:
                chunk = chunk[:total - offset]
            return bytes([DATA]) + u32(rid) + string(chunk)
        if kind == CLOSE:
            self.handles.pop(body[4:4 + struct.unpack(">I", body[:4])[0]], None)
            return self.status(rid, OK)
        return self.status(rid, FAILURE)

    @staticmethod
    def status(rid: int, code: int) -> bytes:
        return bytes([STATUS]) + u32(rid) + u32(code) + string("") + string("")


def main() -> None:
    scenario = json.load(open(sys.argv[1]))
    server = Server(scenario)
    inp, out = sys.stdin.buffer, sys.stdout.buffer

    def read(n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = inp.read(n - len(data))
            if not more:
                raise SystemExit(0)
            data += more
        return data

    while True:
        length = struct.unpack(">I", read(4))[0]
        packet = read(length)
        kind = packet[0]
        if kind == INIT:
            reply = bytes([VERSION]) + u32(3)
        else:
            rid = struct.unpack(">I", packet[1:5])[0]
            reply = server.answer(kind, rid, packet[5:])
        out.write(u32(len(reply)) + reply)
        out.flush()


if __name__ == "__main__":
    main()
