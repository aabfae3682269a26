"""The worker's HTTP endpoints on one port, served from a daemon thread.

`/healthz` is liveness (the supervisor loop is turning; never depends on the
broker), `/readyz` is readiness (broker connected and not draining), `/metrics`
is Prometheus text aggregated over all processes, `/state` is the pod state
JSON documented in `worker.state`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from worker.metrics import WorkerMetrics
from worker.state import RuntimeState

log = logging.getLogger(__name__)


class WorkerHTTPServer:
    """Serves the four endpoints until `stop()`; `port` is the bound port (0 picks one)."""

    def __init__(self, host: str, port: int, state: RuntimeState, metrics: WorkerMetrics,
                 max_stall: float) -> None:
        handler = _make_handler(state, metrics, max_stall)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.5},
                                        name="qscale-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("http listening port=%d", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(state: RuntimeState, metrics: WorkerMetrics,
                  max_stall: float) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {}

    def healthz() -> tuple[int, bytes, str]:
        ok = state.alive(max_stall)
        return (200, b"ok\n", "text/plain") if ok else (503, b"supervisor stalled\n",
                                                       "text/plain")

    def readyz() -> tuple[int, bytes, str]:
        if state.ready:
            return 200, b"ready\n", "text/plain"
        why = b"draining\n" if state.draining else b"broker not connected\n"
        return 503, why, "text/plain"

    def state_doc() -> tuple[int, bytes, str]:
        return 200, json.dumps(state.snapshot()).encode(), "application/json"

    def metrics_doc() -> tuple[int, bytes, str]:
        body, content_type = metrics.exposition()
        return 200, body, content_type

    routes.update({"/healthz": healthz, "/readyz": readyz, "/state": state_doc,
                   "/metrics": metrics_doc})

    class Handler(BaseHTTPRequestHandler):
        server_version = "qscale-worker"

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                code, body, content_type = 404, b"not found\n", "text/plain"
            else:
                try:
                    code, body, content_type = route()
                except Exception:
                    log.exception("http handler failed path=%s", self.path)
                    code, body, content_type = 500, b"internal error\n", "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http %s", format % args)

    return Handler
