"""Pods lost with their node: recognised from the pod alone, replaced at once.

When a node stops reporting, the node lifecycle controller sets its pods' Ready
condition to False and leaves the containers as last seen (ready, running); the
Deployment keeps counting them until they are evicted (5 min by default). Before, the
controller counted them as starting pods (capacity on its way) and as busy: a pool that
lost half its pods with their node kept its size and ran at half capacity until the
eviction.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.podreader import PodStateReader, _node_lost
from controller.podstate import PodState
from controller.policy import History, Observation, PolicyConfig, desired_replicas
from controller.scaledown import confirmed_prefix, removal_order

C = 4


def pod(*, ready: str = "True", containers_ready: bool = True, running: bool = True,
        phase: str = "Running", gates: bool = False, sidecar_ready: bool | None = None,
        condition: str | None = None) -> dict[str, Any]:
    """A pod as the API serves it; `condition` overrides ContainersReady."""
    state = {"running": {"startedAt": "2026-12-07T10:00:00Z"}} if running else {
        "terminated": {"exitCode": 0}}
    sidecars = [] if sidecar_ready is None else [
        {"name": "proxy", "ready": sidecar_ready, "state": {"running": {}}}]
    containers_condition = condition or ("True" if containers_ready and sidecar_ready
                                         in (None, True) else "False")
    return {
        "metadata": {"name": "w-1", "namespace": "ns"},
        "spec": {"nodeName": "n2", **({"readinessGates": [{"conditionType": "x"}]}
                                      if gates else {})},
        "status": {"phase": phase,
                   "conditions": [{"type": "Ready", "status": ready},
                                  {"type": "ContainersReady", "status": containers_condition}],
                   "initContainerStatuses": sidecars,
                   "containerStatuses": [{"name": "worker", "ready": containers_ready,
                                          "state": state}]},
    }


@pytest.mark.parametrize(("manifest", "lost"), [
    (pod(ready="False"), True),                             # the node controller's flip
    (pod(), False),                                         # healthy
    (pod(ready="False", containers_ready=False), False),    # the kubelet: probe failing
    (pod(ready="False", running=False), False),             # container exited
    (pod(ready="False", gates=True), False),                # a readiness gate not met
    (pod(ready="False", phase="Pending"), False),
    (pod(ready="Unknown"), False),
    # a native sidecar not ready: the kubelet's ContainersReady says so
    (pod(ready="False", sidecar_ready=False), False),
    (pod(ready="False", sidecar_ready=False, condition="True"), False),
    (pod(ready="False", sidecar_ready=True), True),
])
def test_a_lost_node_is_told_from_the_pod_alone(manifest: dict[str, Any], lost: bool) -> None:
    assert _node_lost(manifest) is lost


def test_pods_lost_with_their_node_are_replaced_at_once() -> None:
    """8 pods, 4 on a dead node, a backlog for 8: ask for 12 so 8 can work."""
    cfg = PolicyConfig(mode="queue", max_replicas=8)
    work = Observation(ok=True, ready=500, in_flight=16, busy_pods=4, lost_pods=4)
    d = desired_replicas(work, 8, C, cfg, History(), 1000.0)
    assert d.desired == 12, d
    assert d.details["lost_pods"] == 4
    # Without lost pods the same backlog keeps 8: max bounds the pods that can work.
    alive = desired_replicas(Observation(ok=True, ready=500, in_flight=16, busy_pods=4),
                             8, C, cfg, History(), 1000.0)
    assert alive.desired == 8


def test_lost_pods_are_not_kept_above_what_the_load_needs() -> None:
    """No work: the working pods scale down as usual, the lost ones are only kept."""
    cfg = PolicyConfig(mode="queue", min_replicas=1, max_replicas=8,
                       scale_down_window_seconds=0)
    d = desired_replicas(Observation(ok=True, ready=0, in_flight=0, lost_pods=3), 8, C, cfg,
                         History(), 1000.0)
    assert d.desired == 1 + 3, d


observations = st.builds(
    Observation, ok=st.booleans(), ready=st.none() | st.integers(0, 5000),
    in_flight=st.none() | st.integers(0, 500), busy_pods=st.integers(0, 80),
    starting_pods=st.integers(0, 80), lost_pods=st.integers(-2, 90),
    unknown=st.just(()) | st.just(("pods",)))


@settings(deadline=None, max_examples=300)
@given(observations, st.integers(0, 80), st.integers(0, 5), st.integers(5, 60))
def test_lost_pods_are_kept_on_top_of_the_decision_for_the_working_ones(
        o: Observation, current: int, min_replicas: int, max_replicas: int) -> None:
    cfg = PolicyConfig(mode="queue", min_replicas=min_replicas, max_replicas=max_replicas)
    lost = min(max(o.lost_pods, 0), current, max_replicas)
    d = desired_replicas(o, current, C, cfg, History(), 1000.0)
    working = desired_replicas(Observation(**{**o.__dict__, "lost_pods": 0}),
                               current - lost, C, cfg, History(), 1000.0)
    assert d.desired == working.desired + lost
    if o.ok and o.ready is not None:  # a failed read holds the current size
        assert d.desired - lost >= min_replicas
    assert d.desired - lost <= max(max_replicas, current - lost)


def test_scale_in_removes_lost_pods_first_without_asking_them() -> None:
    """The ReplicaSet deletes not-Ready pods first; a lost one is not asked for /state
    or a cordon (it cannot answer): it is confirmed gone, and never counts as busy."""
    lost = PodState(name="lost", ip="10.244.2.5", phase="Running", created=1.0,
                    terminating=False, state=None, ready_at=None, node="n2",
                    state_error="timed out", node_lost=True)
    busy = PodState(name="busy", ip="10.244.1.5", phase="Running", created=2.0,
                    terminating=False, state={"busy": 1, "in_flight": 1}, ready_at=3.0,
                    node="n1")
    order = removal_order([busy, lost], {})
    assert [p.name for p in order] == ["lost", "busy"]
    assert confirmed_prefix(order, 2, cordon_held=lambda p: False) == 1
    assert not lost.counts_as_busy and not lost.counts_as_running and lost.idle


def test_a_worker_that_still_answers_is_not_lost() -> None:
    """A kubelet down, or a node cut from the API server but not from the broker: the
    pods look lost to Kubernetes, but a worker answering /state with running tasks is
    busy, and scale-in must not take it first as idle."""
    reader = PodStateReader(None, access="direct")  # type: ignore[arg-type]
    answers: dict[str, Any] = {}
    reader._fetch = lambda ns, name, ip, port: (answers.get(name), None if name in answers
                                                 else "timed out")  # type: ignore[method-assign]
    manifest = {**pod(ready="False"), "metadata": {"name": "w-1", "namespace": "ns",
                                                    "creationTimestamp": None}}
    manifest["status"]["podIP"] = "10.244.2.7"
    assert reader._one(manifest, 8080).node_lost  # silent: lost
    answers["w-1"] = {"busy": 2, "in_flight": 2}
    answering = reader._one(manifest, 8080)
    assert not answering.node_lost and answering.counts_as_busy
    reader._pool.shutdown()


def test_lost_pods_never_add_more_than_max_replicas() -> None:
    """Every node unreachable (a control-plane fault): at most maxReplicas on top."""
    cfg = PolicyConfig(mode="queue", max_replicas=5)
    d = desired_replicas(Observation(ok=True, ready=500, in_flight=0, lost_pods=40), 40, C,
                         cfg, History(), 1000.0)
    assert d.desired <= 40 and d.details["lost_pods"] == 5
