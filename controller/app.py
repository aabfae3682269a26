"""Assembles the controller from settings and runs it until SIGTERM.

Wiring only: API client, metrics, HTTP, leader election, and the pool manager.
On SIGTERM the lease is released first (this replica stops acting at once and a
standby takes over without waiting out the lease), then the pool loops stop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from kubernetes import client, config

from controller.cordon import PodCordoner
from controller.events import EventRecorder
from controller.http import HealthServer
from controller.kubeapi import KubeApi
from controller.leader import LeaderElector
from controller.manager import PoolManager, make_deps
from controller.metrics import ControllerMetrics
from controller.podreader import PodStateReader
from controller.pool import pool_from_settings
from controller.settings import ControllerSettings
from worker.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices that are not settings."""

    kubeconfig: str | None = None
    once: bool = False


SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def lease_namespace(settings: ControllerSettings) -> str:
    """The configured lease namespace, else the pod's own, else "default"."""
    if settings.lease_namespace:
        return settings.lease_namespace
    try:
        with open(SA_NAMESPACE_FILE) as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else a kubeconfig."""
    cfg = client.Configuration()
    try:
        if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=cfg, persist_config=False)
        else:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=cfg)
    except Exception as exc:
        raise ConfigError(f"--kubeconfig/KUBECONFIG: cannot load Kubernetes credentials: "
                          f"{exc}") from None
    cfg.connection_pool_maxsize = 32  # pod /state reads run 16 in parallel, plus watches
    return client.ApiClient(cfg)


class ApiProbe:
    """Remembers whether the API server answered recently (for /readyz)."""

    def __init__(self, kube: KubeApi, stop: threading.Event,
                 interval: float = 10.0) -> None:
        self.kube = kube
        self.stop, self.interval = stop, interval
        self.last_ok = 0.0

    def check(self) -> bool:
        try:
            self.kube.version()
        except Exception as exc:
            log.warning("API server unreachable: %s", exc)
            return False
        self.last_ok = time.monotonic()
        return True

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.check()

    def reachable(self) -> bool:
        return time.monotonic() - self.last_ok < 3 * self.interval


def run(settings: ControllerSettings, options: RunOptions) -> int:
    """Run the controller; returns the process exit code."""
    kube = KubeApi(api_client(options.kubeconfig))
    metrics = ControllerMetrics()
    events = EventRecorder(kube, host=settings.identity)
    pod_reader = PodStateReader(kube, access=settings.pod_state_access,
                                timeout=settings.pod_state_timeout_seconds)
    elector: LeaderElector | None = None
    if settings.leader_election and not options.once and not settings.dry_run:
        elector = LeaderElector(
            kube, name=settings.lease_name,
            namespace=lease_namespace(settings), identity=settings.identity,
            duration_seconds=settings.lease_duration_seconds,
            renew_seconds=settings.lease_renew_seconds,
            on_change=lambda leader: metrics.is_leader.set(1 if leader else 0))
    else:
        metrics.is_leader.set(1)
    deps = make_deps(kube, pod_reader=pod_reader, events=events, metrics=metrics,
                     is_leader=elector.is_leader if elector else (lambda: True),
                     dry_run=settings.dry_run, log_format=settings.log_format,
                     status_interval=settings.status_min_interval_seconds)
    deps.cordoner = cordoner = _cordoner(kube, settings)
    manager = PoolManager(deps, custom=kube, namespace=settings.namespace, events=events,
                          background=not options.once, controller_name=settings.name)
    if options.once:
        return _run_once(settings, manager, kube)

    stop = manager.stop_event
    probe = ApiProbe(kube, stop)
    probe.check()
    def stalled() -> list[str]:
        problems = manager.stalled()
        if elector is not None and elector.stalled():
            problems.append("leader election")
        return problems

    server = HealthServer(settings.http_host, settings.http_port, metrics.registry,
                          api_reachable=probe.reachable, alive=lambda: not stop.is_set(),
                          stalled=stalled)
    server.start()
    threading.Thread(target=probe.run, daemon=True, name="api-probe").start()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if elector is not None:
        elector.start()
    if settings.pool_source == "workerpools":
        manager.start_watching()
    else:
        manager.add_static(pool_from_settings(settings))
    log.info("controller running identity=%s pool_source=%s namespace=%s http=%s dry_run=%s",
             settings.identity, settings.pool_source, settings.namespace or "*", server.port,
             settings.dry_run)
    stop.wait()
    if elector is not None:  # first: stop acting and hand over at once
        elector.stop(release=True)
    manager.stop()
    server.stop()
    pod_reader.close()
    if cordoner is not None:
        cordoner.close()
    return 0


def _cordoner(kube: KubeApi, settings: ControllerSettings) -> PodCordoner | None:
    """Cordons busy pods the policy wants gone, when the workers' control token is known."""
    token = settings.control_token.get_secret_value()
    if not token:
        log.info("cordoning off: QSCALE_CONTROL_TOKEN is not set, busy pods leave only "
                 "when they happen to turn idle")
        return None
    return PodCordoner(kube, access=settings.pod_state_access, token=token,
                       ttl_seconds=settings.cordon_ttl_seconds,
                       timeout=max(1.0, settings.pod_state_timeout_seconds))


def _run_once(settings: ControllerSettings, manager: PoolManager, kube: KubeApi) -> int:
    """One tick of every pool in the foreground, then exit (0 if every tick worked)."""
    if settings.pool_source == "env":
        manager.add_static(pool_from_settings(settings))
    else:
        listed: Any = kube.list_workerpools(settings.namespace)
        for item in listed.get("items", []):
            manager.on_event("SYNC", item)
    results = manager.tick_all_once()
    manager.stop()
    return 0 if all(r.error is None for r in results.values()) else 1
