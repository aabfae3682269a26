"""The controller's one HTTP port: /healthz, /readyz and /metrics.

/healthz fails (503, naming what) when a pool loop, a watcher or the leader
election has not ticked within its bound (`stalled()` lists them), so the kubelet
restarts a controller whose threads hang instead of trusting a live process.
/readyz is about the API server, not leadership: a standby that can reach the
API is ready (it takes over the moment the leader goes), so both replicas of a
healthy pair pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


class HealthServer:
    """Serves health and metrics in a daemon thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 api_reachable: Callable[[], bool], alive: Callable[[], bool],
                 stalled: Callable[[], list[str]] = list) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    problems = [] if outer.alive() else ["stopping"]
                    problems += outer.stalled()
                    body = "".join(f"stalled: {p}\n" for p in problems) or "ok\n"
                    self._send(503 if problems else 200, body.encode())
                elif path == "/readyz":
                    ok = outer.api_reachable()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"api unreachable\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http " + format, *args)

        self.registry = registry
        self.api_reachable = api_reachable
        self.alive = alive
        self.stalled = stalled
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="controller-http")

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
