"""The controller's HTTP port on loopback: health, readiness and Prometheus metrics."""

from __future__ import annotations

import urllib.error
import urllib.request

from controller.http import HealthServer
from controller.metrics import ControllerMetrics


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_ready_and_metrics() -> None:
    metrics = ControllerMetrics()
    reachable = {"api": True}
    server = HealthServer("127.0.0.1", 0, metrics.registry,
                          api_reachable=lambda: reachable["api"], alive=lambda: True).start()
    try:
        metrics.queue_ready.labels("ns", "p").set(42)
        metrics.scale_events.labels("ns", "p", "up").inc()
        metrics.decisions.labels("ns", "p", "scale-up:queue").inc()
        metrics.is_leader.set(1)
        metrics.loop_seconds.labels("ns", "p").observe(0.02)
        assert _get(server.port, "/healthz") == (200, "ok\n")
        assert _get(server.port, "/readyz")[0] == 200
        reachable["api"] = False
        assert _get(server.port, "/readyz")[0] == 503
        code, text = _get(server.port, "/metrics")
        assert code == 200
        for line in ('qscale_controller_queue_ready{namespace="ns",pool="p"} 42.0',
                     'qscale_controller_scale_events_total{direction="up",namespace="ns",'
                     'pool="p"} 1.0',
                     'qscale_controller_decisions_total{namespace="ns",pool="p",'
                     'reason="scale-up:queue"} 1.0',
                     "qscale_controller_is_leader 1.0",
                     "qscale_controller_loop_duration_seconds_count"):
            assert line in text, line
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.stop()
