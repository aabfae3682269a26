"""Prometheus metrics of the controller, on their own registry (passed explicitly)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ControllerMetrics:
    """Every series the controller exports, prefixed qscale_controller_."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        pool = ["namespace", "pool"]
        self.queue_ready = Gauge("qscale_controller_queue_ready",
                                 "Ready tasks over the pool's queues", pool,
                                 registry=self.registry)
        self.queue_in_flight = Gauge("qscale_controller_queue_in_flight",
                                     "Claimed, unfinished tasks over the pool's queues",
                                     pool, registry=self.registry)
        self.arrival_rate = Gauge("qscale_controller_arrival_rate",
                                  "Smoothed task arrival rate (tasks/s)", pool,
                                  registry=self.registry)
        self.desired_replicas = Gauge("qscale_controller_desired_replicas",
                                      "Replicas the policy asked for", pool,
                                      registry=self.registry)
        self.current_replicas = Gauge("qscale_controller_current_replicas",
                                      "spec.replicas of the target Deployment", pool,
                                      registry=self.registry)
        self.busy_pods = Gauge("qscale_controller_busy_pods",
                               "Pods running at least one task (or not answering)", pool,
                               registry=self.registry)
        self.cordoned_pods = Gauge("qscale_controller_cordoned_pods",
                                   "Busy pods told to take no new tasks (to remove once idle)",
                                   pool, registry=self.registry)
        self.cordon_errors = Counter("qscale_controller_cordon_errors",
                                     "Failed cordon/uncordon requests to worker pods", pool,
                                     registry=self.registry)
        self.scale_events = Counter("qscale_controller_scale_events",
                                    "Scale patches sent, by direction",
                                    [*pool, "direction"], registry=self.registry)
        self.decisions = Counter("qscale_controller_decisions",
                                 "Policy decisions, by reason", [*pool, "reason"],
                                 registry=self.registry)
        self.metric_errors = Counter("qscale_controller_metric_read_errors",
                                     "Failed queue metric reads", pool, registry=self.registry)
        self.api_errors = Counter("qscale_controller_api_errors",
                                  "Failed Kubernetes API calls while acting", pool,
                                  registry=self.registry)
        self.unknown_inputs = Counter(
            "qscale_controller_unknown_inputs",
            "Ticks on which an input a scale-down rests on was unknown (scale-down held)",
            [*pool, "input"], registry=self.registry)
        self.tick_errors = Counter("qscale_controller_tick_errors",
                                   "Pool ticks that raised (a bug or an unexpected error)",
                                   pool, registry=self.registry)
        self.refused = Gauge("qscale_controller_pool_refused",
                             "1 while the pool's target is scaled by an HPA or another "
                             "WorkerPool (the pool does not act)", pool,
                             registry=self.registry)
        self.loop_seconds = Histogram(
            "qscale_controller_loop_duration_seconds", "Time of one pool tick", pool,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry)
        self.is_leader = Gauge("qscale_controller_is_leader",
                               "1 when this replica holds the lease and acts",
                               registry=self.registry)

    def pool_seen(self, namespace: str, pool: str) -> None:
        """Create the pool's error counters at 0: "no errors yet" must read as 0, not as
        no series (the QscaleControllerErrors alert and the dashboard rate() them)."""
        for counter in (self.metric_errors, self.api_errors, self.tick_errors,
                        self.cordon_errors):
            counter.labels(namespace, pool)

    def forget(self, namespace: str, pool: str) -> None:
        """Drop a pool's gauges: it was deleted, or this replica is a standby (only the
        leader exports them, so a dashboard's sum counts each pool once)."""
        for gauge in (self.queue_ready, self.queue_in_flight, self.arrival_rate,
                      self.desired_replicas, self.current_replicas, self.busy_pods,
                      self.cordoned_pods, self.refused):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, pool)
