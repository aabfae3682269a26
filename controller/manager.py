"""Runs one loop per pool: pools come from WorkerPool resources or from the environment.

Each pool gets its own thread ticking every `pollIntervalSeconds`, so a slow
broker or API call in one pool never delays another. A WorkerPool edit replaces
the pool's spec in place (next tick uses it); a deleted pool's loop stops. A
spec that cannot be acted on yields a Warning event and a Ready=False condition.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.actuator import Actuator
from controller.conflicts import Conflicts, owned_by
from controller.crd import StatusWriter, WorkerPoolWatcher
from controller.events import EventRecorder, Involved
from controller.kubeapi import KubeApi
from controller.loop import LoopDeps, PoolLoop, TickResult
from controller.pool import KIND, PoolSpec, SpecError, pool_from_workerpool
from controller.sources import BrokerDepthSource, MetricReadError

log = logging.getLogger(__name__)


def secret_broker_url(kube: KubeApi, spec: PoolSpec) -> str:
    """The broker URL a pool names: inline, or read from its Secret on each (re)connect."""
    if spec.broker_url:
        return spec.broker_url
    ref = spec.broker_secret
    if ref is None:
        raise MetricReadError("no broker url or secretRef")
    try:
        secret = kube.read_secret(spec.namespace, ref.name)
    except ApiException as exc:
        raise MetricReadError(
            f"broker secret {spec.namespace}/{ref.name}: {exc.status} {exc.reason}") from exc
    data = (secret.get("data") or {}).get(ref.key)
    if data is None:
        raise MetricReadError(f"broker secret {spec.namespace}/{ref.name} has no key {ref.key!r}")
    return base64.b64decode(data).decode().strip()


class LazySecretSource:
    """A broker depth source whose URL is resolved from the Secret on first use."""

    def __init__(self, resolve: Callable[[], str], queues: tuple[str, ...]) -> None:
        self._resolve = resolve
        self._queues = queues
        self._inner: BrokerDepthSource | None = None

    def sample(self) -> Any:
        if self._inner is None:
            self._inner = BrokerDepthSource(self._resolve(), self._queues)
        try:
            return self._inner.sample()
        except MetricReadError:
            self._inner.close()
            self._inner = None  # re-read the Secret next time: it may have been rotated
            raise

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


# A pool loop that has not finished a tick for this long (or ten poll intervals, if
# longer) is stalled: /healthz fails. A healthy tick stays well below it even with
# every API call at its timeout.
STALL_SECONDS = 120.0


class PoolRunner:
    """A thread ticking one PoolLoop at its poll interval until stopped."""

    def __init__(self, loop: PoolLoop, stop: threading.Event) -> None:
        self.loop = loop
        self._stop = threading.Event()
        self._global_stop = stop
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"pool-{loop.spec.key}")

    def _run(self) -> None:
        clock = self.loop.deps.clock
        while not (self._stop.is_set() or self._global_stop.is_set()):
            started = clock()
            try:
                self.loop.tick()
            except Exception as exc:  # a bug: reported (condition, event, metric), not fatal
                log.exception("pool=%s tick failed", self.loop.spec.key)
                self.loop.tick_failed(exc)
            wait = self.loop.spec.poll_interval_seconds - (clock() - started)
            self._stop.wait(max(0.05, wait))
        self.loop.close()

    def stop(self) -> None:
        self._stop.set()


class PoolManager:
    """Owns the pool loops and keeps them in line with the declared pools."""

    def __init__(self, deps: LoopDeps, *, custom: KubeApi | None,
                 namespace: str, events: EventRecorder | None, background: bool = True,
                 controller_name: str = "") -> None:
        self.deps = deps
        self.controller_name = controller_name
        self.stall_seconds = STALL_SECONDS
        self.background = background
        self.custom = custom
        self.namespace = namespace
        self.events = events
        self.stop_event = threading.Event()
        self._runners: dict[str, PoolRunner] = {}
        self._bad: dict[str, str] = {}
        self._lock = threading.Lock()
        self._watcher: WorkerPoolWatcher | None = None

    def start_watching(self) -> None:
        assert self.custom is not None
        self._watcher = WorkerPoolWatcher(self.custom, self.namespace, self.on_event).start()

    def add_static(self, spec: PoolSpec) -> None:
        self._upsert(spec)

    def on_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Apply one WorkerPool change from the watch: every pool goes into the conflict
        index, only the pools this controller owns get a loop."""
        conflicts = self.deps.conflicts
        if kind == "RESYNCED":
            items = obj.get("items", [])
            if conflicts is not None:
                conflicts.resynced(items)
            keep = {f"{(o.get('metadata') or {}).get('namespace')}/"
                    f"{(o.get('metadata') or {}).get('name')}" for o in items
                    if owned_by(o, self.controller_name)}
            for key in set(self._runners) - keep:
                self._remove(key)
            return
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if kind == "DELETED":
            if conflicts is not None:
                conflicts.pool_gone(str(meta.get("namespace")), str(meta.get("name")))
            self._remove(key)
            return
        if conflicts is not None:
            conflicts.pool_seen(obj)
        if not owned_by(obj, self.controller_name):  # another release's pool: hands off
            self._bad.pop(key, None)
            self._remove(key)
            return
        try:
            spec = pool_from_workerpool(obj)
        except (SpecError, ValueError) as exc:
            self._reject(key, meta, str(exc))
            return
        self._bad.pop(key, None)
        self._upsert(spec)

    def _reject(self, key: str, meta: Mapping[str, Any], reason: str) -> None:
        self._remove(key)
        if self._bad.get(key) == reason:
            return
        self._bad[key] = reason
        log.warning("pool=%s invalid spec: %s", key, reason)
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        if self.events and not self.deps.dry_run and self.deps.is_leader():
            self.events.emit(Involved(KIND, namespace, name, str(meta.get("uid") or "")),
                             "Warning", "InvalidSpec", reason)
        if self.deps.make_status and not self.deps.dry_run and self.deps.is_leader():
            writer = StatusWriter(self.custom, namespace, name) if self.custom else None
            if writer is not None:
                writer.condition("Ready", False, "InvalidSpec", reason)
                writer.write({"lastDecisionReason": "error:invalid-spec",
                              "observedGeneration": int(meta.get("generation") or 0)})

    def _upsert(self, spec: PoolSpec) -> None:
        with self._lock:
            runner = self._runners.get(spec.key)
            if runner is not None:
                runner.loop.update(spec)
                return
            runner = PoolRunner(PoolLoop(spec, self.deps), self.stop_event)
            self._runners[spec.key] = runner
        log.info("pool=%s started (deployment=%s queues=%s)", spec.key, spec.deployment,
                 ",".join(spec.queues))
        if self.background:
            runner.thread.start()

    def _remove(self, key: str) -> None:
        with self._lock:
            runner = self._runners.pop(key, None)
        if runner is not None:
            runner.stop()
            namespace, _, name = key.partition("/")
            self.deps.metrics.forget(namespace, name)
            log.info("pool=%s stopped", key)

    def stalled(self) -> list[str]:
        """What has not ticked within its bound: pool loops and watchers (for /healthz)."""
        problems = []
        if self._watcher is not None and self._watcher.stalled():
            problems.append("the WorkerPool watch")
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            loop = runner.loop
            bound = max(self.stall_seconds, 10 * loop.spec.poll_interval_seconds)
            age = loop.deps.clock() - loop.last_tick
            if age > bound:
                problems.append(f"pool {loop.spec.key}: no tick for {age:.0f}s "
                                f"(bound {bound:.0f}s)")
            elif self.background and runner.thread.ident is not None \
                    and not runner.thread.is_alive() and not self.stop_event.is_set():
                problems.append(f"pool {loop.spec.key}: its thread ended")
            if loop.watcher_stalled():
                problems.append(f"pool {loop.spec.key}: the Deployment watch")
        return problems

    def pools(self) -> list[PoolLoop]:
        with self._lock:
            return [r.loop for r in self._runners.values()]

    def tick_all_once(self) -> dict[str, TickResult]:
        """One tick of every pool, in this thread (for `run --once`)."""
        return {loop.spec.key: loop.tick() for loop in self.pools()}

    def stop(self) -> None:
        self.stop_event.set()
        if self._watcher is not None:
            self._watcher.stop()
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.stop()
        for runner in runners:
            if runner.thread.is_alive():
                runner.thread.join(timeout=5)
            elif not self.background:
                runner.loop.close()


def make_deps(kube: KubeApi, *, pod_reader: Any, events: EventRecorder | None,
              metrics: Any, is_leader: Callable[[], bool], dry_run: bool, log_format: str,
              status_interval: float) -> LoopDeps:
    """Wire the per-pool factories to one shared API client."""

    def make_source(spec: PoolSpec) -> Any:
        if spec.broker_url:
            return BrokerDepthSource(spec.broker_url, spec.queues)
        return LazySecretSource(lambda: secret_broker_url(kube, spec), spec.queues)

    def make_actuator(spec: PoolSpec) -> Actuator:
        return Actuator(kube, spec.namespace, spec.deployment)

    def make_status(spec: PoolSpec) -> StatusWriter | None:
        if not spec.from_crd:
            return None
        return StatusWriter(kube, spec.namespace, spec.name, min_interval=status_interval)

    return LoopDeps(make_source=make_source, make_actuator=make_actuator,
                    pod_reader=pod_reader, events=events,
                    make_status=make_status,
                    metrics=metrics, is_leader=is_leader, dry_run=dry_run,
                    log_format=log_format, conflicts=Conflicts(kube.list_hpas))
