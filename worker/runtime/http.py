"""The worker's HTTP endpoints on one port, served from a daemon thread.

`/healthz` is liveness (the supervisor loop is turning; never depends on the
broker), `/readyz` is readiness (broker connected and not draining), `/metrics`
is Prometheus text aggregated over all processes, `/state` is the pod state
JSON documented in `worker.runtime.state`.

`POST /cordon` (optional JSON body `{"ttl_seconds": 120}`) tells the worker to
stop taking new tasks and give its unstarted ones back to the broker, so the
controller can empty a busy pod and remove it once idle; `POST /uncordon` lifts
it (POST only: through the API server's pod proxy that needs just `create
pods/proxy`). Both change behaviour, so they need the QSCALE_CONTROL_TOKEN, as
`Authorization: Bearer <token>` or as `X-Qscale-Control-Token: <token>` (the
Kubernetes API server's pod proxy consumes the Authorization header); without a
configured token they answer 403. The handler only sets the cordon deadline in
`RuntimeState`; the supervisor loop acts on it within one turn (a fraction of a
second) and reports `"cordoned": true` in /state once it has.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from worker.runtime.metrics import WorkerMetrics
from worker.runtime.state import RuntimeState

log = logging.getLogger(__name__)

CORDON_TTL_DEFAULT = 120.0
CORDON_TTL_MAX = 3600.0
MAX_BODY_BYTES = 4096
TOKEN_HEADER = "X-Qscale-Control-Token"

Reply = tuple[int, bytes, str]


class WorkerHTTPServer:
    """Serves the four endpoints until `stop()`; `port` is the bound port (0 picks one)."""

    def __init__(self, host: str, port: int, state: RuntimeState, metrics: WorkerMetrics,
                 max_stall: float, control_token: str = "") -> None:
        handler = _make_handler(state, metrics, max_stall, control_token)
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


def _json(code: int, doc: dict[str, object]) -> Reply:
    return code, json.dumps(doc).encode() + b"\n", "application/json"


def _refusal(headers: Message, token: str) -> str | None:
    """None when the request carries the control token, else why it is refused."""
    if not token:
        return "cordon disabled: QSCALE_CONTROL_TOKEN is not set"
    given = headers.get(TOKEN_HEADER)
    if given is None:
        scheme, _, credentials = (headers.get("Authorization") or "").partition(" ")
        given = credentials.strip() if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        return "missing or wrong control token"
    return None


def _cordon_ttl(raw: bytes, fields: set[str]) -> float:
    """The TTL asked for in a POST /cordon body (`fields` it may have; none for
    /uncordon); ValueError says what is wrong."""
    if not raw.strip():
        return CORDON_TTL_DEFAULT
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("body must be JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(doc) - fields)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    ttl = doc.get("ttl_seconds", CORDON_TTL_DEFAULT)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) \
            or not 0 < ttl <= CORDON_TTL_MAX:
        raise ValueError(f"ttl_seconds must be a number in (0, {CORDON_TTL_MAX:g}]")
    return float(ttl)


def _make_handler(state: RuntimeState, metrics: WorkerMetrics, max_stall: float,
                  control_token: str) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[], Reply]] = {}

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

    def control(path: str, headers: Message, raw: bytes) -> Reply:
        refused = _refusal(headers, control_token)
        if refused is not None:
            log.warning("POST %s refused: %s", path, refused)
            return _json(403, {"error": refused})
        try:
            ttl = _cordon_ttl(raw, {"ttl_seconds"} if path == "/cordon" else set())
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        if path == "/uncordon":
            if state.cordon_left() is not None:
                log.info("uncordon requested")
            state.uncordon()
            return _json(200, {"cordon_expires_in": None})
        if state.cordon_left() is None:
            log.info("cordon requested ttl=%gs", ttl)
        state.cordon(ttl)
        return _json(200, {"cordon_expires_in": ttl})

    class Handler(BaseHTTPRequestHandler):
        server_version = "qscale-worker"

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                self._reply(404, b"not found\n", "text/plain")
            else:
                self._reply(*self._guarded(route))

        def do_POST(self) -> None:
            self.close_connection = True  # rare requests: never misread an unread body
            path = self.path.split("?", 1)[0]
            if path not in ("/cordon", "/uncordon"):
                self._reply(404, b"not found\n", "text/plain")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                self._reply(*_json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"}))
                return
            raw = self.rfile.read(length) if length else b""
            self._reply(*self._guarded(lambda: control(path, self.headers, raw)))

        def _guarded(self, route: Callable[[], Reply]) -> Reply:
            try:
                return route()
            except Exception:
                log.exception("http handler failed path=%s", self.path)
                return 500, b"internal error\n", "text/plain"

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http %s", format % args)

    return Handler
