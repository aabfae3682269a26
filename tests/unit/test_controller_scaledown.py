"""The scale-down gate (controller/scaledown.py), the label selector and /state checks:
a pod leaves only once confirmed idle (and cordoned), in the ReplicaSet's own order."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from controller.cordon import CordonPlan, CordonResult
from controller.podreader import label_selector
from controller.podstate import PodState, state_problem
from controller.scaledown import ScaleDownGate, confirmed_prefix, removal_order


def pod(name: str, busy: int = 0, *, created: float = 1.0, ready: bool = True,
        phase: str = "Running", node: str = "n1", cost: int | None = None,
        state: Any = "auto", running: bool = True) -> PodState:
    doc = {"busy": busy, "in_flight": busy} if state == "auto" else state
    return PodState(name=name, ip="10.0.0.1", phase=phase, created=created, terminating=False,
                    state=doc, deletion_cost=cost, ready_at=created + 1 if ready else None,
                    node=node, containers_running=running)


def test_removal_order_is_the_replicasets() -> None:
    pods = [pod("ready-cheap", cost=0), pod("ready-costly", cost=5),
            pod("not-ready", ready=False, cost=9), pod("pending", phase="Pending", cost=9),
            pod("unscheduled", phase="Pending", node="", cost=9)]
    names = [p.name for p in removal_order(pods, {})]
    assert names == ["unscheduled", "pending", "not-ready", "ready-cheap", "ready-costly"]
    # The costs about to be written win over the annotations the pods carry.
    names = [p.name for p in removal_order(pods[:2], {"ready-cheap": 9, "ready-costly": 1})]
    assert names == ["ready-costly", "ready-cheap"]


def test_confirmed_prefix_stops_at_the_first_busy_pod() -> None:
    order = [pod("a"), pod("b", 2), pod("c")]
    assert confirmed_prefix(order, 3) == 1
    assert confirmed_prefix([pod("x", state=None)], 1) == 0            # silent: not idle
    assert confirmed_prefix([pod("x", state=None, running=False)], 1) == 1  # nothing runs
    assert confirmed_prefix([pod("x", phase="Pending", state=None)], 1) == 1


@dataclass
class Cordoner:
    fail: set[str] = field(default_factory=set)
    sent: list[str] = field(default_factory=list)

    def apply(self, namespace: str, port: int, plan: CordonPlan, before: Any) -> CordonResult:
        self.sent += [p.name for p in plan.cordon]
        ok = {p.name for p in plan.cordon} - self.fail
        return CordonResult(frozenset(ok), len(self.fail & {p.name for p in plan.cordon}))


@dataclass
class Reader:
    """Pods report the cordon after `lag` refreshes; `claims` start a task meanwhile."""

    cordoner: Cordoner
    lag: int = 1
    claims: set[str] = field(default_factory=set)
    calls: int = 0

    def refresh(self, namespace: str, pods: list[PodState], port: int) -> list[PodState]:
        self.calls += 1
        out = []
        for p in pods:
            busy = 1 if p.name in self.claims else 0
            held = p.name in self.cordoner.sent and p.name not in self.cordoner.fail \
                and self.calls >= self.lag
            out.append(replace(p, state={"busy": busy, "in_flight": busy, "cordoned": held}))
        return out


def gate(cordoner: Cordoner | None, reader: Reader | None) -> ScaleDownGate:
    clock = {"now": 0.0}

    def sleep(seconds: float) -> None:
        clock["now"] += seconds

    return ScaleDownGate(reader, cordoner, sleep=sleep, clock=lambda: clock["now"])  # type: ignore[arg-type]


def test_gate_without_cordoner_confirms_the_fresh_read() -> None:
    pods = [pod("a", 0), pod("b", 1), pod("c", 0)]
    costs = {"a": 0, "c": 1, "b": 1_000_002}
    result = gate(None, None).check("ns", 8080, pods, 3, 1, costs, cordoned=(),
                                    deadline_passed=False)
    assert (result.desired, result.leaving, result.unconfirmed) == (1, ("a", "c"), 0)


def test_gate_cordons_then_confirms_before_removing() -> None:
    cordoner = Cordoner()
    reader = Reader(cordoner, lag=2)
    pods = [pod("a"), pod("b"), pod("c", 3)]
    result = gate(cordoner, reader).check("ns", 8080, pods, 3, 1, {"a": 0, "b": 1, "c": 10**6},
                                          cordoned=(), deadline_passed=False)
    assert cordoner.sent == ["a", "b"] and reader.calls >= 2
    assert (result.desired, result.leaving) == (1, ("a", "b"))


def test_gate_keeps_a_pod_that_claimed_work_or_refused_the_cordon() -> None:
    cordoner = Cordoner(fail={"b"})
    reader = Reader(cordoner, claims={"a"})
    pods = [pod("a"), pod("b"), pod("c")]
    result = gate(cordoner, reader).check("ns", 8080, pods, 3, 0, {"a": 0, "b": 1, "c": 2},
                                          cordoned=(), deadline_passed=False)
    assert (result.desired, result.leaving, result.unconfirmed) == (3, (), 3)


def test_gate_counts_replicas_without_a_pod_as_free() -> None:
    result = gate(None, None).check("ns", 8080, [pod("a", 1)], 3, 1, {}, cordoned=(),
                                    deadline_passed=False)
    assert result.desired == 1            # two replicas had no pod yet; "a" is busy
    result = gate(None, None).check("ns", 8080, [pod("a", 1)], 3, 0, {}, cordoned=(),
                                    deadline_passed=False)
    assert result.desired == 1


def test_gate_lets_busy_pods_go_after_the_drain_deadline() -> None:
    result = gate(None, None).check("ns", 8080, [pod("a", 1)], 1, 0, {}, cordoned=(),
                                    deadline_passed=True)
    assert result.desired == 0


@pytest.mark.parametrize(("selector", "query"), [
    ({"matchLabels": {"app": "w", "tier": "x"}}, "app=w,tier=x"),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["b", "a"]}]},
     "app in (a,b)"),
    ({"matchLabels": {"app": "w"}, "matchExpressions": [
        {"key": "canary", "operator": "DoesNotExist"},
        {"key": "team", "operator": "Exists"},
        {"key": "env", "operator": "NotIn", "values": ["dev"]}]},
     "app=w,!canary,team,env notin (dev)"),
    ({}, None), (None, None),
    ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, None),
])
def test_label_selector_keeps_match_expressions(selector: Any, query: str | None) -> None:
    assert label_selector(selector) == query


@pytest.mark.parametrize("doc", [
    [], "busy", {"busy": "lots", "in_flight": 0}, {"busy": -1, "in_flight": 0},
    {"busy": 1.5, "in_flight": 0}, {"busy": True, "in_flight": 0}, {"in_flight": 0},
    {"busy": 0, "in_flight": None},
])
def test_garbage_state_is_a_problem_not_zero(doc: Any) -> None:
    assert state_problem(doc) is not None
    p = pod("g", state=doc)
    assert not p.reachable and p.counts_as_busy and not p.idle and p.state_unknown
