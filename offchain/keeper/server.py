"""The keeper's health and metrics endpoint: ``GET /health`` (JSON; 503 when degraded) and
``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


def serve_health(health: Callable[[], dict[str, Any]], registry: CollectorRegistry, host: str = "127.0.0.1",
                 port: int = 0) -> ThreadingHTTPServer:  # fmt: skip
    """Serve in a daemon thread; ``server.server_address`` has the port; ``shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/health":
                body = health()
                self._send(200 if body.get("status") == "ok" else 503, json.dumps(body).encode())
            else:
                self._send(404, json.dumps({"error": f"no route {path}", "field": "path"}).encode())

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="keeper-health", daemon=True).start()
    return server
