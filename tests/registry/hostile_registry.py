"""A registry that lies, written for the tests: every answer comes from the scenario the test sets.

It speaks just enough of the distribution API (``/v2/``, manifests, blobs, tags, catalog, a token
endpoint) to lead vmctl into each trap: huge bodies (streamed, never built in memory), endless or
circular pages, redirects to other schemes or in a loop, a missing ``Location``, wrong JSON types,
malformed digests, compressed answers, and a ``Bearer`` challenge whose realm is elsewhere. A
separate `Listener` stands for "another host:port" and records every request that reaches it.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from dataclasses import dataclass, field

HUGE = 1 << 30   # what a "huge" body claims and streams: 1 GiB


def _stream_zeros(wfile, total: int, chunked: bool) -> None:
    block = b"0" * (1 << 16)
    sent = 0
    try:
        while sent < total:
            n = min(len(block), total - sent)
            if chunked:
                wfile.write(b"%x\r\n" % n + block[:n] + b"\r\n")
            else:
                wfile.write(block[:n])
            sent += n
        if chunked:
            wfile.write(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up reading: that is what the test wants


@dataclass
class Listener:
    """An HTTP server on another address that only records who came (and with what)."""

    address: str = "127.0.0.2"
    seen: list = field(default_factory=list)

    def start(self) -> "Listener":
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
                body = json.dumps({"token": "stolen"}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer((self.address, 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class HostileRegistry:
    """Set `scenario` (a name from `answer`) and `params`; `requests` logs (method, path)."""

    def __init__(self, user: str = "alice", password: str = "pw"):
        self.user, self.password = user, password
        self.scenario = "basic"
        self.params: dict = {}
        self.requests: list[tuple[str, str, str | None]] = []

    def start(self, ssl_context=None) -> "HostileRegistry":
        reg = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                reg.requests.append(("GET", self.path, self.headers.get("Authorization")))
                reg.answer(self)

            def do_HEAD(self):
                reg.requests.append(("HEAD", self.path, self.headers.get("Authorization")))
                reg.answer(self, head=True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ answers
    def _authorized(self, h) -> bool:
        want = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return h.headers.get("Authorization") == want

    @staticmethod
    def send(h, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def send_json(self, h, doc, code: int = 200, headers: dict | None = None, head: bool = False) -> None:
        self.send(h, code, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

    def answer(self, h, head: bool = False) -> None:
        s, p = self.scenario, self.params
        path = h.path.split("?", 1)[0]
        if s == "basic":  # an honest-looking registry with Basic auth (for `vmctl login`)
            if not self._authorized(h):
                return self.send(h, 401, headers={"WWW-Authenticate": 'Basic realm="hostile"'}, head=head)
            return self.send_json(h, {}, head=head) if path == "/v2/" else self.send(h, 404, head=head)
        if s == "realm-elsewhere":
            if h.headers.get("Authorization", "").startswith("Bearer "):
                return self.send_json(h, {}, head=head) if path == "/v2/" else self.send(h, 404, head=head)
            return self.send(h, 401, headers={"WWW-Authenticate": f'Bearer realm="{p["realm"]}",service="x"'},
                             head=head)
        if path == "/v2/":
            return self.send_json(h, {}, head=head)
        if s == "huge-error":
            h.send_response(400)
            h.send_header("Content-Type", "application/json")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            return _stream_zeros(h.wfile, HUGE, chunked=True)
        if s == "huge-manifest":
            h.send_response(200)
            h.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            return _stream_zeros(h.wfile, HUGE, chunked=True)
        if s == "huge-declared":
            h.send_response(200)
            h.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            h.send_header("Content-Length", str(HUGE))
            h.end_headers()
            return _stream_zeros(h.wfile, HUGE, chunked=False)
        if s == "endless-pages":
            n = int(h.path.rsplit("last=", 1)[1]) if "last=" in h.path else 0
            return self.send_json(h, {"repositories": [f"r{n}"]},
                                  headers={"Link": f'</v2/_catalog?n=1&last={n + 1}>; rel="next"'}, head=head)
        if s == "circular-pages":
            return self.send_json(h, {"repositories": ["r"]},
                                  headers={"Link": '</v2/_catalog?n=1&last=r>; rel="next"'}, head=head)
        if s == "next-page-elsewhere":
            return self.send_json(h, {"repositories": ["r"]},
                                  headers={"Link": f'<{p["elsewhere"]}/v2/_catalog>; rel="next"'}, head=head)
        if s == "redirect":
            headers = {"Location": p["location"]} if p.get("location") is not None else {}
            return self.send(h, p.get("code", 302), headers=headers, head=head)
        if s == "json":  # a fixed JSON document for every manifest/tags/catalog request
            headers = dict(p.get("headers", {}))
            body = p["body"] if isinstance(p["body"], bytes) else json.dumps(p["body"]).encode()
            return self.send(h, 200, body, {"Content-Type": p.get("type", "application/json"), **headers}, head)
        if s == "status":  # every API request answered with one status (a mirror that is down: 503)
            return self.send(h, p.get("code", 503), head=head)
        if s == "index-then":  # an index whose entry digest is hostile
            return self.send_json(h, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                      "manifests": p["manifests"]},
                                  headers={"Content-Type": "application/vnd.oci.image.index.v1+json"}, head=head)
        return self.send(h, 404, head=head)
