"""A fault-injecting HTTP proxy for the teacher tests (stdlib only).

It sits between the teacher client and a real server on 127.0.0.1 and, for each incoming POST,
consumes one scripted action: ``"pass"``, ``("delay", seconds)`` (sleep, then forward), ``"drop"``
(close the connection without any response) or ``("status", code)`` (answer that HTTP code with
an OpenAI-style JSON error; 429 carries ``Retry-After: 0``). When the script runs out every POST
passes. GET requests (``/v1/models``) pass, and are counted in ``gets``, unless ``models_status``
is set: then they are answered with that HTTP code (an endpoint that does not list its models).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Action = Any  # "pass" | "drop" | ("delay", float) | ("status", int)

# Hop-by-hop headers are per connection and must not be forwarded (RFC 9110, 7.6.1).
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "host", "content-length"}


class FaultProxy:
    """Forwards HTTP requests to ``upstream`` (``http://HOST:PORT``), injecting scripted faults."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must look like http://HOST:PORT, got {upstream!r}")
        self.upstream_host: str = parts.hostname
        self.upstream_port: int = parts.port
        self.requests = 0  # POSTs received
        self.forwarded = 0  # POSTs that reached upstream
        self.max_in_flight = 0  # most POSTs being handled at the same time
        self.seen_headers: list[dict[str, str]] = []  # headers of each POST, names lowercased
        self.gets = 0  # GETs received
        self.models_status: int | None = None  # answer GETs with this HTTP code instead of forwarding
        self._in_flight = 0
        self._actions: deque[Action] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control --------------------------------------------------------------------------------
    def script(self, actions: list[Action]) -> None:
        """Replace the pending actions; one is used per incoming POST, then "pass" forever."""
        for action in actions:
            _check_action(action)
        with self._lock:
            self._actions = deque(actions)

    @property
    def pending(self) -> int:
        """Scripted actions not used yet."""
        with self._lock:
            return len(self._actions)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fault proxy is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: where the teacher client should point."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True  # a handler stuck in a delay must not block stop()
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:  # noqa: PYI034 - Self needs Python 3.11
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler --------------------------------------------------------------------
    def _next_action(self) -> Action:
        with self._lock:
            return self._actions.popleft() if self._actions else "pass"


def _check_action(action: Action) -> None:
    if action in ("pass", "drop"):
        return
    if isinstance(action, tuple) and len(action) == 2 and action[0] in ("delay", "status"):
        return
    raise ValueError(f"unknown fault proxy action {action!r}")


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, like a real server: the client reuses connections

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        with self.owner._lock:
            self.owner.gets += 1
        if self.owner.models_status is not None:
            self._error(self.owner.models_status)
            return
        self._forward(b"")

    def do_POST(self) -> None:
        proxy = self.owner
        body = self._body()
        with proxy._lock:
            proxy.requests += 1
            proxy.seen_headers.append({k.lower(): v for k, v in self.headers.items()})
            proxy._in_flight += 1
            proxy.max_in_flight = max(proxy.max_in_flight, proxy._in_flight)
        try:
            action = proxy._next_action()
            if action == "drop":
                # No status line at all: the client sees the connection die mid-request.
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if isinstance(action, tuple) and action[0] == "status":
                self._error(int(action[1]))
                return
            if isinstance(action, tuple) and action[0] == "delay":
                time.sleep(float(action[1]))
            with proxy._lock:
                proxy.forwarded += 1
            self._forward(body)
        finally:
            with proxy._lock:
                proxy._in_flight -= 1

    def _error(self, code: int) -> None:
        payload = json.dumps({"error": {"message": f"injected by FaultProxy: HTTP {code}",
                                        "type": "fault_proxy", "code": code}}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if code == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, body: bytes) -> None:
        proxy = self.owner
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=600)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            status, reason, resp_headers = resp.status, resp.reason, resp.getheaders()
        except OSError as exc:
            self.close_connection = True
            try:
                self.send_error(502, f"upstream unreachable: {exc}")
            except OSError:
                pass
            return
        finally:
            conn.close()
        try:
            self.send_response(status, reason)
            for name, value in resp_headers:
                if name.lower() not in _HOP and name.lower() not in ("date", "server"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (e.g. its timeout fired during a delay)
            self.close_connection = True
