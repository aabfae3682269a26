"""Which busy pods the controller cordons (pure choice; the HTTP side runs against a real
worker in tests/integration/test_runtime_cordon.py and on kind in tests/k8s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.cordon import CordonPlan, CordonResult, PodCordoner, PoolCordons, plan_cordons
from controller.metrics import ControllerMetrics
from controller.podstate import PodState, deletion_costs
from controller.policy import Decision, History, PolicyConfig
from controller.pool import PoolSpec
from controller.settings import load_settings
from worker.errors import ConfigError
from worker.settings import load_settings as worker_settings


def _pod(name: str, busy: int, created: float = 0.0, *, cordoned: bool = False,
         reachable: bool = True, terminating: bool = False) -> PodState:
    state = {"busy": busy, "in_flight": busy, "cordoned": cordoned,
             "cordon_expires_in": 60.0 if cordoned else None}
    return PodState(name=name, ip="10.0.0.1", phase="Running", created=created,
                    terminating=terminating, state=state if reachable else None)


def _names(pods: tuple[PodState, ...]) -> list[str]:
    return [p.name for p in pods]


def test_the_least_busy_reachable_busy_pods_are_chosen() -> None:
    pods = [_pod("idle", 0), _pod("three", 3), _pod("one", 1), _pod("two", 2),
            _pod("silent", 0, reachable=False), _pod("gone", 1, terminating=True)]
    plan = plan_cordons(pods, drain=2, remove=0, cordoned=())
    assert _names(plan.cordon) == ["one", "two"]
    assert plan.uncordon == ()
    assert plan_cordons(pods, drain=0, remove=0, cordoned=()) == CordonPlan()
    assert _names(plan_cordons(pods, drain=9, remove=0, cordoned=()).cordon) == \
        ["one", "two", "three"]   # never the idle, silent or terminating ones


def test_a_cordoned_pod_stays_the_one_being_emptied() -> None:
    pods = [_pod("a", 1), _pod("b", 4), _pod("c", 2, cordoned=True)]
    plan = plan_cordons(pods, drain=2, remove=0, cordoned={"b"})
    assert _names(plan.cordon) == ["c", "b"]   # held ones first, though "a" is less busy
    assert plan.uncordon == ()
    plan = plan_cordons(pods, drain=1, remove=0, cordoned={"b"})
    assert _names(plan.cordon) == ["c"] and _names(plan.uncordon) == ["b"]


def test_release_unless_the_pod_is_being_removed() -> None:
    pods = [_pod("emptied", 0, 1.0, cordoned=True), _pod("young", 0, 5.0), _pod("busy", 2)]
    # Scaling down by one: the emptied pod goes first (idle, cordoned) and stays cordoned.
    plan = plan_cordons(pods, drain=0, remove=1, cordoned={"emptied"})
    assert _names(plan.cordon) == ["emptied"] and plan.uncordon == ()
    # No scale-down (load came back): it is released and takes work again.
    plan = plan_cordons(pods, drain=0, remove=0, cordoned={"emptied"})
    assert plan.cordon == () and _names(plan.uncordon) == ["emptied"]
    # Unreachable or terminating pods get no request either way.
    quiet = [_pod("x", 1, reachable=False), _pod("y", 1, terminating=True, cordoned=True)]
    assert plan_cordons(quiet, drain=0, remove=0, cordoned={"x", "y"}) == CordonPlan()


def test_deletion_costs_put_cordoned_pods_first_within_idle_and_busy() -> None:
    pods = [_pod("idle-old", 0, 1.0), _pod("idle-cordoned", 0, 0.5, cordoned=True),
            _pod("busy-1", 1), _pod("busy-3-cordoned", 3)]
    costs = deletion_costs(pods, {"busy-3-cordoned"})
    order = sorted(costs, key=costs.__getitem__)
    assert order == ["idle-cordoned", "idle-old", "busy-3-cordoned", "busy-1"]
    assert max(costs["idle-cordoned"], costs["idle-old"]) < 1_000_000
    plain = deletion_costs([_pod("busy-1", 1), _pod("busy-3", 3)])
    assert plain["busy-1"] < plain["busy-3"]   # without cordons: least busy first, as before


@dataclass
class FakeCordoner:
    calls: list[tuple[list[str], list[str]]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    def apply(self, namespace: str, port: int, plan: CordonPlan,
              before: Any) -> CordonResult:
        self.calls.append((_names(plan.cordon), _names(plan.uncordon)))
        ok = {p.name for p in plan.cordon if p.name not in self.refuse}
        failed = len(plan.cordon) - len(ok)
        return CordonResult(frozenset(ok), failed)


def _decision(desired: int, drain: int) -> Decision:
    return Decision(desired, "floor:busy-pods", History(), desired, drain_pods=drain)


def test_pool_cordons_act_only_for_an_acting_leader_after_a_pod_read() -> None:
    metrics = ControllerMetrics()
    cordoner = FakeCordoner(refuse={"b"})
    cordons = PoolCordons(cordoner, metrics)  # type: ignore[arg-type]
    spec = PoolSpec(namespace="ns", name="p", queues=("q",), deployment="w", concurrency=1,
                    policy=PolicyConfig())
    pods = [_pod("a", 1), _pod("b", 2), _pod("c", 3)]
    cordons.update(spec, pods, _decision(3, 2), 3, acting=True, pods_read=False)
    assert cordoner.calls == []                      # stale pod states: no choice made
    cordons.update(spec, pods, _decision(3, 2), 3, acting=True, pods_read=True)
    assert cordoner.calls == [(["a", "b"], [])]
    assert cordons.names == {"a"}                    # "b" refused: not counted as cordoned
    gauge = metrics.registry.get_sample_value
    assert gauge("qscale_controller_cordoned_pods", {"namespace": "ns", "pool": "p"}) == 1
    assert gauge("qscale_controller_cordon_errors_total",
                 {"namespace": "ns", "pool": "p"}) == 1
    paused = PoolSpec(**{**spec.__dict__, "paused": True})
    cordons.update(paused, pods, _decision(3, 2), 3, acting=True, pods_read=True)
    assert cordoner.calls[-1] == ([], ["a"])         # paused: hands off, release them
    cordons.names = frozenset({"a"})
    cordons.update(spec, pods, _decision(3, 2), 3, acting=False, pods_read=True)
    assert cordons.names == frozenset() and len(cordoner.calls) == 2  # standby: forgets
    off = PoolCordons(None, metrics)                 # no control token: feature off
    off.update(spec, pods, _decision(3, 2), 3, acting=True, pods_read=True)
    assert off.names == frozenset()


def test_token_is_shared_with_the_workers_and_never_printed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSCALE_CONTROL_TOKEN", "t0ken")
    monkeypatch.delenv("QSCALE_CONTROLLER_CORDON_TTL_SECONDS", raising=False)
    settings = load_settings()
    assert settings.control_token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(settings) and settings.cordon_ttl_seconds == 120.0
    assert worker_settings().control_token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(worker_settings())
    monkeypatch.setenv("QSCALE_CONTROLLER_CORDON_TTL_SECONDS", "5")  # below a pod read's 3x
    with pytest.raises(ConfigError, match=r"^QSCALE_CONTROLLER_CORDON_TTL_SECONDS:"):
        load_settings()


def test_cordoner_needs_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        PodCordoner(None, access="direct", token="", ttl_seconds=60)  # type: ignore[arg-type]
