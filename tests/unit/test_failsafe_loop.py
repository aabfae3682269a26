"""Issue #10, the loop's part, with stand-ins for broker and cluster (the real ones:
tests/k8s/test_failsafe_k8s.py). Each test here failed on 6e697a6.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.actuator import _view
from controller.loop import LoopDeps, PoolLoop
from controller.manager import PoolRunner
from controller.metrics import ControllerMetrics
from controller.podstate import PodState
from controller.policy import PolicyConfig
from controller.pool import PoolSpec
from controller.sources import DepthSample
from tests.unit.test_controller_loop import (
    Clock,
    FakeActuator,
    FakeCordoner,
    FakeEvents,
    FakeSource,
)


@dataclass
class FakeStatus:
    conditions: dict[str, tuple[bool, str, str]] = field(default_factory=dict)
    written: list[dict[str, Any]] = field(default_factory=list)

    def condition(self, kind: str, ok: bool, reason: str, message: str = "") -> None:
        self.conditions[kind] = (ok, reason, message)

    def write(self, fields: dict[str, Any], *, force: bool = False) -> bool:
        self.written.append(dict(fields))
        return True


@dataclass
class ScriptedPods:
    """Pod reads: the pods, or an exception to raise; records the selectors asked for."""

    pods: list[PodState] = field(default_factory=list)
    error: Exception | None = None
    selectors: list[Any] = field(default_factory=list)

    def read(self, namespace: str, selector: Any, port: int) -> list[PodState]:
        self.selectors.append(selector)
        if self.error is not None:
            raise self.error
        return self.pods

    def refresh(self, namespace: str, pods: list[PodState], port: int) -> list[PodState]:
        return [p for p in self.pods if p.name in {q.name for q in pods}]


def busy_pod(name: str, tasks: int, created: float = 1.0, *, cordoned: bool = False,
             state: dict[str, Any] | None = None) -> PodState:
    doc = {"busy": tasks, "in_flight": tasks, "cordoned": cordoned} if state is None else state
    return PodState(name=name, ip="10.0.0.1", phase="Running", created=created,
                    terminating=False, state=doc, ready_at=created + 2.0)


def pool(**policy: Any) -> PoolSpec:
    config = PolicyConfig(**{"mode": "queue", "max_replicas": 20,
                             "scale_down_window_seconds": 10.0, **policy})
    return PoolSpec(namespace="ns", name="p", queues=("q",), deployment="w", concurrency=4,
                    policy=config, broker_url="redis://x:1/0", from_crd=True)


@dataclass
class Rig:
    loop: PoolLoop
    source: FakeSource
    actuator: FakeActuator
    pods: ScriptedPods
    events: FakeEvents
    clock: Clock
    status: FakeStatus
    metrics: ControllerMetrics
    cordoner: FakeCordoner

    def scales(self) -> list[int]:
        return [n for kind, n in self.actuator.calls if kind == "scale"]

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels or None)


def rig(spec: PoolSpec, replicas: int, *, leader: bool = True,
        actuator: FakeActuator | None = None) -> Rig:
    source, pods, events, clock = FakeSource(), ScriptedPods(), FakeEvents(), Clock()
    actuator = actuator or FakeActuator(replicas)
    status, metrics, cordoner = FakeStatus(), ControllerMetrics(), FakeCordoner()
    deps = LoopDeps(make_source=lambda _s: source, make_actuator=lambda _s: actuator,  # type: ignore[arg-type,return-value]
                    pod_reader=pods, events=events,  # type: ignore[arg-type]
                    make_status=lambda _s: status,  # type: ignore[arg-type,return-value]
                    metrics=metrics, is_leader=lambda: leader, clock=clock, wall_clock=clock,
                    cordoner=cordoner)  # type: ignore[arg-type]
    return Rig(PoolLoop(spec, deps), source, actuator, pods, events, clock, status, metrics,
               cordoner)


def run_ticks(r: Rig, seconds: float, step: float = 1.0) -> None:
    end = r.clock.now + seconds
    while r.clock.now < end:
        r.loop.tick()
        r.clock.now += step


# -- item 1: a pod list that fails is unknown, never empty ------------------------------

def test_failed_pod_list_holds_the_scale_down_and_says_why() -> None:
    """8 pods each running a long task, concurrency 4, queue mode: need 8/4 = 2."""
    r = rig(pool(), replicas=8)
    r.source.in_flight = 8
    r.pods.pods = [busy_pod(f"p{i}", 1) for i in range(8)]
    r.pods.error = ApiException(status=429, reason="Too Many Requests")
    run_ticks(r, 30)
    assert r.scales() == [], "a scale-down on an unknown pod list"
    assert r.actuator.replicas == 8
    warnings = [e for e in r.events.seen if e[0] == "Warning"]
    assert any(reason == "ScaleDownHeld" and "429" in msg for _, reason, msg in warnings), \
        r.events.seen
    ok, reason, message = r.status.conditions["InputsKnown"]
    assert not ok and reason == "PodListFailed" and "429" in message
    assert (r.sample("qscale_controller_unknown_inputs_total", namespace="ns", pool="p",
                     input="pods") or 0) >= 1
    # The list recovers: the real busy count floors the scale-down at 8.
    r.pods.error = None
    run_ticks(r, 30)
    assert r.actuator.replicas == 8 and r.status.conditions["InputsKnown"][0]


def test_failed_pod_list_still_allows_a_scale_up() -> None:
    r = rig(pool(), replicas=2)
    r.pods.error = ApiException(status=403, reason="Forbidden")
    r.source.ready = 40
    r.loop.tick()
    assert r.scales() == [10]


def test_match_expressions_selector_is_resolved() -> None:
    """A Deployment selecting only by matchExpressions has no matchLabels: its pods are
    still listed (with the full selector), so their busy count floors the scale-down."""
    dep = {"metadata": {"name": "w", "resourceVersion": "1"},
           "spec": {"replicas": 8, "selector": {"matchExpressions": [
               {"key": "app", "operator": "In", "values": ["w", "w2"]},
               {"key": "canary", "operator": "DoesNotExist"}]}},
           "status": {"replicas": 8, "readyReplicas": 8}}
    view = _view(dep)

    class SelectorActuator(FakeActuator):
        def current(self) -> Any:
            return type(view)(**{**view.__dict__, "spec_replicas": self.replicas})

    r = rig(pool(), replicas=8, actuator=SelectorActuator(8))
    r.source.in_flight = 8
    r.pods.pods = [busy_pod(f"p{i}", 1) for i in range(8)]
    run_ticks(r, 30)
    assert r.actuator.replicas == 8, r.scales()
    assert "app in (w,w2)" in str(r.pods.selectors[-1]) and "!canary" in str(
        r.pods.selectors[-1]), r.pods.selectors[-1]


# -- item 2: in-flight that cannot be read is unknown -----------------------------------

class UnknownInFlight(FakeSource):
    def sample(self) -> DepthSample:
        return DepthSample(self.ready, 0, {"q": (self.ready, 0)}, in_flight_known=False)


def test_unknown_in_flight_holds_scale_down_and_cordons_nothing() -> None:
    """RabbitMQ without its management API: every message prefetched by 4 workers."""
    r = rig(pool(), replicas=4)
    r.source = UnknownInFlight()
    r.loop.deps.make_source = lambda _s: r.source
    r.pods.pods = [busy_pod(f"p{i}", 4) for i in range(4)]
    run_ticks(r, 30)
    assert r.scales() == [] and r.actuator.replicas == 4
    assert r.cordoner.calls == [] or all(not c for c, _ in r.cordoner.calls), r.cordoner.calls
    assert any(reason == "ScaleDownHeld" and "in-flight" in msg
               for _, reason, msg in r.events.seen), r.events.seen
    assert r.status.conditions["InputsKnown"][1] == "InFlightUnknown"
    r.source.ready = 40                      # work shows up: scale-up still allowed
    r.loop.tick()
    assert r.scales() == [10]


# -- /state: slow or garbage is unknown, never idle -------------------------------------

def test_garbage_state_is_not_idle() -> None:
    r = rig(pool(), replicas=4)
    r.pods.pods = [busy_pod("a", 0), busy_pod("b", 0),
                   busy_pod("c", 0, state={"busy": "lots", "in_flight": None}),
                   busy_pod("d", 0, state={"busy": -3, "in_flight": 2.5})]
    run_ticks(r, 30)
    assert r.actuator.replicas == 4, r.scales()
    assert r.status.conditions["InputsKnown"][1] == "PodStateUnreadable"


# -- item 4: an error in a tick is reported, not only logged ----------------------------

def test_tiny_target_per_slot_does_not_freeze_the_pool() -> None:
    r = rig(pool(target_per_slot=1e-320), replicas=1)
    r.source.ready = 5
    result = r.loop.tick()
    assert result.error is None and r.scales() == [20]


def test_a_failing_tick_sets_a_condition_an_event_and_a_metric() -> None:
    class Boom(FakeActuator):
        def current(self) -> Any:
            raise OverflowError("cannot convert float infinity to integer")

    r = rig(pool(), replicas=1, actuator=Boom(1))
    stop = threading.Event()
    runner = PoolRunner(r.loop, stop)
    runner.thread.start()
    try:
        for _ in range(100):
            if r.sample("qscale_controller_tick_errors_total", namespace="ns", pool="p"):
                break
            threading.Event().wait(0.02)
    finally:
        stop.set()
        runner.thread.join(5)
    assert (r.sample("qscale_controller_tick_errors_total", namespace="ns", pool="p")
            or 0) >= 1
    assert any(reason == "TickFailed" and "OverflowError" in msg
               for _, reason, msg in r.events.seen), r.events.seen
    assert r.status.conditions["Ready"][:2] == (False, "TickFailed")


# -- item 7: a targetRef change racing a tick -------------------------------------------

def test_target_change_during_a_tick_never_leaves_the_old_deployment_scaled() -> None:
    old, new = FakeActuator(1), FakeActuator(1)
    made: list[str] = []

    def make_actuator(spec: PoolSpec) -> FakeActuator:
        made.append(spec.deployment)
        return old if spec.deployment == "w" else new

    r = rig(pool(), replicas=1)
    spec_new = PoolSpec(**{**r.loop.spec.__dict__, "deployment": "w-new"})

    class Racing(FakeSource):
        moved = False

        def sample(self) -> DepthSample:
            if not self.moved:   # the watch delivers the edit while this tick runs
                self.moved = True
                r.loop.update(spec_new)
            return super().sample()

    source = Racing(ready=40)
    r.loop.deps.make_source = lambda _s: source
    r.loop.deps.make_actuator = make_actuator  # type: ignore[assignment]
    for _ in range(3):
        r.loop.tick()
        r.clock.now += 1
    assert ("scale", 10) in new.calls, (made, old.calls, new.calls)
    assert all(kind != "scale" for kind, _ in old.calls), old.calls


# -- item 9: only the leader exports pool gauges ----------------------------------------

def test_a_standby_exports_no_pool_gauges() -> None:
    r = rig(pool(), replicas=3, leader=False)
    r.source.ready = 8
    run_ticks(r, 3)
    text = "\n".join(f"{m.name} {s.labels}" for m in r.metrics.registry.collect()
                     for s in m.samples if s.labels.get("pool") == "p"
                     and m.type == "gauge")
    assert text == "", text


# -- item 8: /healthz sees a stalled pool loop ------------------------------------------

def test_healthz_fails_while_a_pool_loop_is_stalled() -> None:
    import urllib.error
    import urllib.request

    from controller.http import HealthServer
    from controller.manager import PoolManager

    released = threading.Event()

    class Hanging(FakeActuator):
        def current(self) -> Any:
            released.wait(10)        # e.g. a call that never returns
            return super().current()

    r = rig(pool(), replicas=1, actuator=Hanging(1))
    r.loop.deps.clock = __import__("time").monotonic
    manager = PoolManager(r.loop.deps, custom=None, namespace="ns", events=None)
    manager.stall_seconds = 0.3
    r.loop.spec = PoolSpec(**{**r.loop.spec.__dict__, "poll_interval_seconds": 0.01})
    manager._runners[r.loop.spec.key] = PoolRunner(r.loop, manager.stop_event)
    server = HealthServer("127.0.0.1", 0, r.metrics.registry, api_reachable=lambda: True,
                          alive=lambda: True, stalled=manager.stalled).start()

    def healthz() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz",
                                        timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    try:
        r.loop.last_tick = r.loop.deps.clock()
        manager._runners[r.loop.spec.key].thread.start()
        threading.Event().wait(0.6)
        code, body = healthz()
        assert code == 503 and "pool ns/p: no tick" in body, body
        released.set()
        threading.Event().wait(0.3)
        assert healthz()[0] == 200
    finally:
        released.set()
        manager.stop()
        server.stop()
