"""The loop's back-off after Kubernetes API errors (the real API server: tests/k8s).

The real Actuator over a stand-in KubeApi whose scale patch raises
`ApiException` a set number of times: the Actuator turns it into ActuationError,
the loop then holds its writes for 1, 2, 4, ... 30 s (no call while holding),
keeps deciding meanwhile, and writes its latest decision on the first tick after
the hold; a success resets the back-off.
"""

from __future__ import annotations

import logging

import pytest
from kubernetes.client import ApiException

from controller.actuator import Actuator, DeploymentView
from controller.loop import PoolLoop
from tests.unit.test_controller_loop import Clock, FakeEvents, FakeSource, _loop, _pool

TICK = 0.25  # the loop's poll interval in these tests (seconds of the fake clock)


class FlakyApps:
    """KubeApi stand-in: the scale patch fails with the given statuses, then succeeds."""

    def __init__(self, clock: Clock, statuses: list[int]) -> None:
        self.clock = clock
        self.statuses = list(statuses)
        self.calls: list[tuple[float, int]] = []  # (clock time, replicas asked for)

    def patch_deployment_scale(self, namespace: str, name: str, replicas: int) -> None:
        self.calls.append((self.clock.now, replicas))
        if self.statuses:
            status = self.statuses.pop(0)
            raise ApiException(status=status, reason={500: "Internal Server Error",
                                                      409: "Conflict",
                                                      403: "Forbidden"}[status])


class SyncedActuator(Actuator):
    """The real Actuator with its Deployment watch already synced (no thread, no server)."""

    def start(self) -> SyncedActuator:
        self.watcher.set(DeploymentView(exists=True, spec_replicas=1, status_replicas=1,
                                        ready_replicas=1, selector="app=w"))
        return self


def _flaky_loop(statuses: list[int]) -> tuple[PoolLoop, FakeSource, FlakyApps, SyncedActuator,
                                              FakeEvents, Clock]:
    loop, source, _, _, events, clock = _loop(_pool())
    apps = FlakyApps(clock, statuses)
    actuator = SyncedActuator(apps, "ns", "w")  # type: ignore[arg-type]
    loop.deps.make_actuator = lambda _spec: actuator
    return loop, source, apps, actuator, events, clock


def _run(loop: PoolLoop, clock: Clock, seconds: float) -> list[bool]:
    """Tick every TICK seconds for `seconds`; returns which ticks acted."""
    acted = []
    for _ in range(round(seconds / TICK)):
        acted.append(loop.tick().acted)
        clock.now += TICK
    return acted


def test_hold_doubles_to_30s_and_the_decision_lands_on_the_first_tick_after(
        caplog: pytest.LogCaptureFixture) -> None:
    statuses = [500, 409, 403, 500, 500, 500, 500]
    loop, source, apps, actuator, events, clock = _flaky_loop(statuses)
    source.ready = 40                                    # 40 tasks / 4 slots -> 10 pods
    start = clock.now
    with caplog.at_level(logging.WARNING, logger="controller.loop"):
        acted = _run(loop, clock, 100.0)
    times = [t - start for t, _ in apps.calls]
    # One attempt, then one per expired hold: 1, 2, 4, 8, 16, 30 (capped), 30 s apart.
    assert times == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 61.0, 91.0], times
    assert [r for _, r in apps.calls] == [10] * 8        # the decision survived every failure
    assert acted.count(True) == 1 and acted.index(True) == round(91.0 / TICK)
    assert actuator.current().spec_replicas == 10
    failures = [r.getMessage() for r in caplog.records if "scaling failed" in r.getMessage()]
    assert [m.split("holding for ")[1].split("s:")[0] for m in failures] == \
        ["1", "2", "4", "8", "16", "30", "30"], failures
    assert "patching scale: 403 Forbidden" in failures[2]
    assert [e[1] for e in events.seen] == ["ScaleFailed"] * 7 + ["ScaledUp"]
    errors = loop.deps.metrics.registry.get_sample_value(
        "qscale_controller_api_errors_total", {"namespace": "ns", "pool": "p"})
    assert errors == 7


def test_success_resets_the_back_off() -> None:
    loop, source, apps, actuator, _, clock = _flaky_loop([500, 500, 500])
    source.ready = 40
    _run(loop, clock, 10.0)                              # fails at 0, 1, 3; succeeds at 7
    assert len(apps.calls) == 4 and actuator.current().spec_replicas == 10
    apps.statuses = [403]
    source.ready = 60                                    # wants 15 now
    before = len(apps.calls)
    _run(loop, clock, 3.0)
    gaps = [b[0] - a[0] for a, b in zip(apps.calls[before:], apps.calls[before + 1:],
                                        strict=False)]
    assert gaps == [1.0], gaps                          # back to a 1 s hold, not 8 s
    assert actuator.current().spec_replicas == 15


def test_the_latest_decision_is_written_after_the_hold() -> None:
    loop, source, apps, actuator, _, clock = _flaky_loop([500, 500])
    source.ready = 40                                    # wants 10 ...
    _run(loop, clock, 2.0)                               # fails at 0 and 1: held until 3
    source.ready = 20                                    # ... now 5, decided during the hold
    _run(loop, clock, 2.0)
    assert [r for _, r in apps.calls] == [10, 10, 5]
    assert actuator.current().spec_replicas == 5
