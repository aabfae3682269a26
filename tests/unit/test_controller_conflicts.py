"""Never fight (controller/conflicts.py): a controller reconciles only the WorkerPools it
owns, and a pool whose Deployment an HPA or an earlier WorkerPool scales is refused.
The same on the real API server: tests/k8s/test_failsafe_k8s.py."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.conflicts import CONTROLLER_LABEL, Conflicts, owned_by
from controller.loop import LoopDeps
from controller.manager import PoolManager
from controller.metrics import ControllerMetrics
from controller.pool import pool_from_workerpool
from tests.unit.test_failsafe_loop import pool, rig


def wp(name: str, target: str, created: str, controller: str | None = None) -> dict[str, Any]:
    labels = {} if controller is None else {CONTROLLER_LABEL: controller}
    return {"metadata": {"namespace": "ns", "name": name, "creationTimestamp": created,
                         "labels": labels, "uid": name},
            "spec": {"queues": ["q"], "broker": {"url": "redis://x:1/0"},
                     "targetRef": {"name": target}}}


def hpa(name: str, target: str, kind: str = "Deployment") -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target}}}


def test_ownership_by_label() -> None:
    assert owned_by(wp("a", "d", "t", "release-a"), "release-a")
    assert not owned_by(wp("a", "d", "t", "release-a"), "release-b")
    assert not owned_by(wp("a", "d", "t", "release-a"), "")
    assert owned_by(wp("a", "d", "t"), "")


def test_each_controller_runs_only_its_own_pools() -> None:
    deps = LoopDeps(make_source=None, make_actuator=None, pod_reader=None,  # type: ignore[arg-type]
                    events=None, make_status=None, metrics=ControllerMetrics(),
                    conflicts=Conflicts(None))
    managers = {name: PoolManager(deps, custom=None, namespace="ns", events=None,
                                  background=False, controller_name=name)
                for name in ("release-a", "release-b")}
    items = [wp("a", "da", "2026-01-01T00:00:00Z", "release-a"),
             wp("b", "db", "2026-01-01T00:00:00Z", "release-b")]
    for manager in managers.values():
        for item in items:
            manager.on_event("SYNC", item)
        manager.on_event("RESYNCED", {"items": items})
    assert [p.spec.name for p in managers["release-a"].pools()] == ["a"]
    assert [p.spec.name for p in managers["release-b"].pools()] == ["b"]
    # A pool relabelled to the other release leaves this controller.
    managers["release-a"].on_event("MODIFIED", wp("a", "da", "2026-01-01T00:00:00Z",
                                                  "release-b"))
    assert managers["release-a"].pools() == []


def test_the_earliest_workerpool_on_a_deployment_wins() -> None:
    conflicts = Conflicts(None)
    first = wp("first", "shared", "2026-01-01T00:00:00Z", "release-b")
    second = wp("second", "shared", "2026-01-02T00:00:00Z", "release-a")
    conflicts.resynced([second, first])
    refusal = conflicts.check(pool_from_workerpool(second)).refusal
    assert refusal is not None and "WorkerPool first" in refusal and "release-b" in refusal
    assert conflicts.check(pool_from_workerpool(first)).refusal is None
    conflicts.pool_gone("ns", "first")
    assert conflicts.check(pool_from_workerpool(second)).refusal is None


def test_an_hpa_on_the_deployment_refuses_the_pool() -> None:
    now = {"t": 0.0}
    calls: list[str] = []

    def list_hpas(namespace: str) -> list[Any]:
        calls.append(namespace)
        return [hpa("cpu", "other"), hpa("web", "w", kind="StatefulSet"), hpa("x", "w")]

    conflicts = Conflicts(list_hpas, clock=lambda: now["t"])
    check = conflicts.check(pool())
    assert check.refusal is not None and "HorizontalPodAutoscaler x" in check.refusal
    conflicts.check(pool())
    assert calls == ["ns"]                  # cached for HPA_LIST_SECONDS
    now["t"] = 11.0
    conflicts.check(pool())
    assert calls == ["ns", "ns"]


def test_an_unreadable_hpa_list_is_unknown_not_empty() -> None:
    now = {"t": 0.0}
    answer: dict[str, Any] = {"error": ApiException(status=403, reason="Forbidden")}

    def list_hpas(namespace: str) -> list[Any]:
        if answer["error"]:
            raise answer["error"]
        return []

    conflicts = Conflicts(list_hpas, clock=lambda: now["t"])
    check = conflicts.check(pool())
    assert check.refusal is None and check.unknown is not None and "403" in check.unknown
    answer["error"] = None
    now["t"] = 11.0
    assert conflicts.check(pool()).unknown is None


def test_a_refused_pool_acts_on_nothing_and_says_why() -> None:
    r = rig(pool(), replicas=2)
    r.loop.deps.conflicts = Conflicts(lambda _ns: [hpa("mine", "w")])
    r.source.ready = 40
    for _ in range(3):
        result = r.loop.tick()
        r.clock.now += 1
    assert r.actuator.calls == [] and result.error is not None
    assert r.status.conditions["Ready"][:2] == (False, "TargetAlreadyScaled")
    assert [e[1] for e in r.events.seen] == ["TargetAlreadyScaled"]
    assert r.sample("qscale_controller_pool_refused", namespace="ns", pool="p") == 1


def test_unknown_hpas_hold_scale_downs() -> None:
    r = rig(pool(), replicas=6)
    r.loop.deps.conflicts = Conflicts(lambda _ns: (_ for _ in ()).throw(
        ApiException(status=403, reason="Forbidden")))
    for _ in range(30):
        r.loop.tick()
        r.clock.now += 1
    assert r.actuator.replicas == 6 and r.status.conditions["InputsKnown"][1] == "ScalersUnknown"
