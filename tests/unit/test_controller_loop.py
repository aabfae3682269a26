"""The loop's wiring with stand-ins for broker and cluster (the real ones: tests/k8s).

These pin the ordering rules that are pure logic: deletion costs before a
scale-down, nothing written by a standby, a paused pool or a dry run, errors held.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from controller.actuator import DeploymentView
from controller.cordon import CordonPlan, CordonResult
from controller.loop import LoopDeps, PoolLoop
from controller.metrics import ControllerMetrics
from controller.podstate import PodState, startup_estimate
from controller.policy import PolicyConfig
from controller.pool import PoolSpec
from controller.sources import DepthSample, MetricReadError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeSource:
    ready: int = 0
    in_flight: int = 0
    fail: bool = False

    def sample(self) -> DepthSample:
        if self.fail:
            raise MetricReadError("ConnectionError: refused")
        return DepthSample(self.ready, self.in_flight, {"q": (self.ready, self.in_flight)})

    def close(self) -> None:
        pass


@dataclass
class FakeActuator:
    replicas: int = 1
    ready: int | None = None   # Ready replicas (None: all of them)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def start(self) -> FakeActuator:
        return self

    def stop(self) -> None:
        pass

    def current(self) -> DeploymentView:
        ready = self.replicas if self.ready is None else self.ready
        return DeploymentView(exists=True, spec_replicas=self.replicas,
                              status_replicas=self.replicas, ready_replicas=ready,
                              selector="app=w")

    def scale(self, replicas: int) -> bool:
        self.calls.append(("scale", replicas))
        changed = replicas != self.replicas
        self.replicas = replicas
        return changed

    def mark_deletion_costs(self, costs: dict[str, int], current: dict[str, int | None]) -> int:
        self.calls.append(("costs", dict(costs)))
        return len(costs)


@dataclass
class FakePods:
    pods: list[PodState] = field(default_factory=list)
    cordoner: Any = None  # a FakeCordoner: pods it cordoned report the cordon

    def read(self, namespace: str, selector: Any, port: int) -> list[PodState]:
        return self.pods

    def refresh(self, namespace: str, pods: list[PodState], port: int) -> list[PodState]:
        held = self.cordoner.held if self.cordoner is not None else set()
        by_name = {p.name: p for p in self.pods}
        return [replace(by_name.get(p.name, p), state={
            **(by_name.get(p.name, p).state or {}), "cordoned": p.name in held})
            for p in pods]


@dataclass
class FakeEvents:
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def emit(self, obj: Any, event_type: str, reason: str, message: str) -> None:
        self.seen.append((event_type, reason, message))


def _pool(**policy: Any) -> PoolSpec:
    """A queue-mode pool: these tests size on depth / slots, not on latency."""
    config = PolicyConfig(**{"mode": "queue", "max_replicas": 20,
                             "scale_down_window_seconds": 10.0, **policy})
    return PoolSpec(namespace="ns", name="p", queues=("q",), deployment="w", concurrency=4,
                    policy=config, broker_url="redis://x:1/0")


def _loop(spec: PoolSpec, *, leader: bool = True, dry_run: bool = False,
          replicas: int = 1, cordoner: Any = None) -> tuple[PoolLoop, FakeSource, FakeActuator,
                                                            FakePods, FakeEvents, Clock]:
    source, actuator, pods, events, clock = (FakeSource(), FakeActuator(replicas), FakePods(),
                                             FakeEvents(), Clock())
    pods.cordoner = cordoner
    deps = LoopDeps(make_source=lambda _s: source, make_actuator=lambda _s: actuator,  # type: ignore[arg-type,return-value]
                    pod_reader=pods, events=events, make_status=None,  # type: ignore[arg-type]
                    metrics=ControllerMetrics(), is_leader=lambda: leader, dry_run=dry_run,
                    clock=clock, wall_clock=clock, cordoner=cordoner)
    return PoolLoop(spec, deps), source, actuator, pods, events, clock


def _pod(name: str, busy: int, created: float, startup: float | None = 2.0) -> PodState:
    return PodState(name=name, ip="10.0.0.1", phase="Running", created=created,
                    terminating=False, state={"busy": busy, "in_flight": busy},
                    ready_at=None if startup is None else created + startup)


def test_burst_scales_in_one_step_with_event() -> None:
    loop, source, actuator, _, events, _ = _loop(_pool())
    source.ready = 40
    result = loop.tick()
    assert actuator.calls == [("scale", 10)]   # 40 tasks / 4 slots per pod
    assert result.acted and result.decision is not None
    assert result.decision.reason.startswith("scale-up")
    assert events.seen[-1][:2] == ("Normal", "ScaledUp")
    assert "1 -> 10" in events.seen[-1][2]


def test_standby_paused_and_dry_run_never_write() -> None:
    for kwargs, spec in (({"leader": False}, _pool()), ({"dry_run": True}, _pool()),
                         ({}, PoolSpec(**{**_pool().__dict__, "paused": True}))):
        loop, source, actuator, _, events, _ = _loop(spec, **kwargs)
        source.ready = 40
        result = loop.tick()
        assert actuator.calls == [] and events.seen == []
        assert result.decision is not None and result.decision.desired == 10
    assert result.fields["reason"].startswith("paused:")


def test_scale_down_marks_idle_pods_first_and_respects_busy_floor() -> None:
    loop, source, actuator, pods, _, clock = _loop(_pool(), replicas=4)
    pods.pods = [_pod("a", 2, 1.0), _pod("b", 0, 2.0), _pod("c", 0, 3.0), _pod("d", 1, 4.0)]
    source.in_flight = 3
    loop.tick()                      # fresh start: the window holds the current size
    assert actuator.calls == []
    clock.now += 11.0                # past the 10 s window
    result = loop.tick()
    assert result.decision is not None
    assert actuator.calls[0][0] == "costs" and actuator.calls[1] == ("scale", 2)
    costs = actuator.calls[0][1]
    assert max(costs["b"], costs["c"]) < min(costs["a"], costs["d"])


def test_busy_pods_floor_the_scale_down() -> None:
    loop, _source, actuator, pods, _, clock = _loop(_pool(), replicas=4)
    pods.pods = [_pod(n, 1, float(i)) for i, n in enumerate("abc")] + [_pod("d", 0, 9.0)]
    loop.tick()
    clock.now += 11.0
    result = loop.tick()                 # queue empty, but three pods still hold tasks
    assert result.decision is not None and result.decision.desired == 3
    assert result.decision.reason == "floor:busy-pods"
    assert actuator.calls[-1] == ("scale", 3)


def test_metric_error_holds_and_warns_once() -> None:
    loop, source, actuator, _, events, clock = _loop(_pool(), replicas=3)
    source.fail = True
    for _ in range(3):
        result = loop.tick()
        clock.now += 20
    assert actuator.calls == []
    assert result.decision is not None and result.decision.reason == "hold:metrics-error"
    warnings = [e for e in events.seen if e[1] == "MetricsUnavailable"]
    assert len(warnings) == 1 and "holding replicas" in warnings[0][2]


def test_observation_counts_starting_pods_from_the_deployment() -> None:
    loop, source, actuator, _, _, _ = _loop(_pool(), replicas=5)
    actuator.ready = 2                   # 5 asked for, 2 Ready: 3 still starting
    source.ready = 1
    result = loop.tick()
    assert result.fields["starting_pods"] == 3
    actuator.ready = 7                   # more Ready than asked (old pods leaving): none
    assert loop.tick().fields["starting_pods"] == 0


def test_service_time_outlives_the_pods_that_reported_it() -> None:
    loop, source, _, pods, _, clock = _loop(_pool(mode="latency"), replicas=1)
    pod = _pod("a", 1, 999.0)
    pods.pods = [PodState(**{**pod.__dict__, "state": {**(pod.state or {}),
                                                       "service_time_seconds": 2.5}})]
    source.ready = 1
    assert loop.tick().fields["service_time"] == 2.5
    pods.pods = []                       # scaled to zero: nobody reports it any more
    clock.now += 6.0
    assert loop.tick().fields["service_time"] == 2.5


def test_startup_time_is_the_median_of_recent_pods() -> None:
    loop, _, _, pods, _, clock = _loop(_pool(mode="latency", pod_startup_seconds=25.0),
                                       replicas=3)
    pods.pods = [_pod("old", 0, 990.0, 1800.0)]       # before the loop watched: a flip?
    assert loop.tick().fields["startup"] == 25.0     # nothing measured: the configured d
    pods.pods += [_pod("a", 0, 999.0, 4.0), _pod("b", 0, 1002.0, 60.0),
                  _pod("c", 0, 1003.0, 6.0), _pod("d", 0, 1004.0, None)]  # d: not Ready
    clock.now += 6.0                                  # past the pod refresh interval
    assert loop.tick().fields["startup"] == 6.0       # median of 4, 6, 60
    pods.pods = [_pod("c", 0, 1003.0, 900.0)]         # c went unready and back: kept at 6
    clock.now += 6.0
    assert loop.tick().fields["startup"] == 6.0
    pods.pods = []                                    # scaled to zero: d is remembered
    clock.now += 6.0
    assert loop.tick().fields["startup"] == 6.0


def test_startup_estimate_keeps_the_newest_pods() -> None:
    many = [_pod(f"p{i}", 0, float(i), 100.0 if i < 5 else 3.0) for i in range(15)]
    assert startup_estimate(many, last=10) == 3.0    # the five slow starters are older
    assert startup_estimate([_pod("a", 0, 1.0, 2.0), _pod("b", 0, 2.0, 4.0)]) == 3.0
    assert startup_estimate([_pod("x", 0, 1.0, None)]) is None
    assert not _pod("a", 0, 1.0).starting and _pod("x", 0, 1.0, None).starting


@dataclass
class FakeCordoner:
    """Accepts every request; records (cordon, uncordon) names per call."""

    calls: list[tuple[list[str], list[str]]] = field(default_factory=list)
    held: set[str] = field(default_factory=set)

    def apply(self, namespace: str, port: int, plan: CordonPlan, before: Any) -> CordonResult:
        self.calls.append(([p.name for p in plan.cordon], [p.name for p in plan.uncordon]))
        self.held |= {p.name for p in plan.cordon}
        self.held -= {p.name for p in plan.uncordon}
        return CordonResult(frozenset(p.name for p in plan.cordon), 0)


def test_busy_floor_cordons_the_least_busy_pods_then_removes_them_once_idle() -> None:
    cordoner = FakeCordoner()
    loop, _source, actuator, pods, _, clock = _loop(_pool(), replicas=4, cordoner=cordoner)
    pods.pods = [_pod("a", 3, 1.0), _pod("b", 1, 2.0), _pod("c", 2, 3.0), _pod("d", 0, 4.0)]
    loop.tick()
    clock.now += 11.0
    result = loop.tick()             # queue empty, three pods busy: floor at 3, need 1
    assert result.decision is not None and result.decision.desired == 3
    assert result.decision.drain_pods == 2
    # The idle pod that goes is cordoned and confirmed first (controller.scaledown),
    # then kept cordoned with the two least busy ones, which drain.
    assert cordoner.calls[-2] == (["d"], [])
    assert cordoner.calls[-1] == (["d", "b", "c"], [])
    assert result.fields["drain"] == 2 and result.fields["cordoned"] == "b,c,d"
    costs = actuator.calls[0][1]
    assert costs["d"] < costs["b"] < costs["c"] < costs["a"]  # cordoned go before "a"
    pods.pods = [_pod("a", 3, 1.0), _pod("b", 0, 2.0), _pod("c", 2, 3.0)]  # "d" removed
    clock.now += 6.0                 # next pod read: "b" has emptied
    result = loop.tick()
    assert result.decision is not None and result.decision.desired == 2
    assert cordoner.calls[-1] == (["b", "c"], [])     # "b" leaves cordoned; "c" still drains
    costs = actuator.calls[-2][1]
    assert costs["b"] == min(costs.values())
    calls = len(cordoner.calls)
    clock.now += 1.0                 # between pod reads: no new requests
    loop.tick()
    assert len(cordoner.calls) == calls


def test_standby_and_dry_run_send_no_cordons() -> None:
    for kwargs, drain in (({"leader": False}, 0), ({"dry_run": True}, 2)):
        cordoner = FakeCordoner()   # (a standby reads no pods, so it sees no busy floor)
        loop, _source, _actuator, pods, _, clock = _loop(_pool(), replicas=4,
                                                         cordoner=cordoner, **kwargs)
        pods.pods = [_pod(n, 1, float(i)) for i, n in enumerate("abc")] + [_pod("d", 0, 9.0)]
        for _ in range(3):
            result = loop.tick()
            clock.now += 11.0
        assert result.decision is not None and result.decision.drain_pods == drain
        assert cordoner.calls == [] and result.fields["cordoned"] is None
