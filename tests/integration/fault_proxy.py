"""A fault-injecting HTTP proxy in front of the real STAC API (127.0.0.1 only)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests


class FaultProxy:
    """HTTP proxy to the real API. ``inject(n, action, when)`` makes the next ``n`` matching requests
    fail with ``action`` ("500", "401", "malformed"); ``require_token`` answers 401 to requests
    without ``Authorization: Bearer <token>``. Every request is recorded as (method, path, status)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.lock = threading.Lock()
        self.faults: list[list[Any]] = []
        self.require_token: str | None = None
        self.seen: list[tuple[str, str, int]] = []
        self.auth_headers: list[str | None] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                status, headers, payload = proxy.respond(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def inject(self, n: int, action: str, when: Callable[[str, str], bool] = lambda m, p: True) -> None:
        with self.lock:
            self.faults.append([n, action, when])

    def respond(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        auth = headers.get("Authorization")
        with self.lock:
            self.auth_headers.append(auth)
            action = None
            for f in self.faults:
                if f[0] > 0 and f[2](method, path):
                    f[0] -= 1
                    action = f[1]
                    break
            if action is None and self.require_token and auth != f"Bearer {self.require_token}":
                action = "401"
        if action == "500":
            out = (500, {"Content-Type": "application/json"}, b'{"code":"InternalError"}')
        elif action == "401":
            out = (
                401,
                {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"},
                b'{"detail":"Not authenticated"}',
            )
        elif action == "malformed":
            out = (200, {"Content-Type": "application/json"}, b'{"type": "Feature", "id": ')
        else:
            fwd = {
                k: v
                for k, v in headers.items()
                if k.lower()
                not in {"host", "content-length", "connection", "authorization", "accept-encoding"}
            }
            r = requests.request(method, self.upstream + path, data=body, headers=fwd, timeout=30)
            # the API writes its own base URL into links: rewrite so pystac-client pages through us
            payload = r.content.replace(self.upstream.encode(), self.url.encode())
            out = (
                r.status_code,
                {"Content-Type": r.headers.get("Content-Type", "application/json")},
                payload,
            )
        with self.lock:
            self.seen.append((method, path, out[0]))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
