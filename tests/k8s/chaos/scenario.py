"""The faults, each injected while real bursts run, and the order they come in.

Every fault that makes an input unknown records a Window (no scale-down of the
named pools may happen inside it). Both pools (Redis, RabbitMQ) run side by side, so
each fault meets both brokers at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from tests.k8s.chaos.history import Recorder
from tests.k8s.chaos.rig import MAX_REPLICAS, MIN_REPLICAS, POOLS, QUEUE, Rig, wait_leader
from tests.k8s.harness import apply, condition, pool_status, spec_replicas, wait_for
from worker.brokers import open_broker
from worker.envelope import Envelope

BOTH = tuple(POOLS.values())


def burst(rig: Rig, count: int = 12, seconds: tuple[float, float] = (3.0, 6.0),
          pools: tuple[str, ...] = ("redis", "rabbit")) -> None:
    """`count` tasks of random length per pool: enough to scale each to its max."""
    for pool in pools:
        bodies = [Envelope.create("chaos.work", [round(random.uniform(*seconds), 2)],
                                  queue=QUEUE).encode() for _ in range(count)]
        with open_broker(rig.urls[pool]) as broker:
            broker.publish_many(QUEUE, bodies)


def replicas(rig: Rig, deployment: str) -> int:
    return spec_replicas(rig.cluster, rig.ns, deployment)


def scaled_up(rig: Rig, at_least: int = 3, timeout: float = 90) -> None:
    for deployment in BOTH:
        wait_for(f"{deployment} to scale up", lambda d=deployment: replicas(rig, d) >= at_least,
                 timeout)


def settled(rig: Rig, timeout: float = 150) -> None:
    """Back at the minimum: the queues ran dry and every pod left went idle."""
    for deployment in BOTH:
        wait_for(f"{deployment} back at {MIN_REPLICAS}",
                 lambda d=deployment: replicas(rig, d) == MIN_REPLICAS, timeout, 1.0)


def held(rig: Rig, rec: Recorder, fault: str, pools: tuple[str, ...], seconds: float,
         inject: Callable[[], None], heal: Callable[[], None],
         probe: Callable[[], Any] | None = None) -> Any:
    """Inject a fault that makes inputs unknown for `seconds`, then heal it."""
    start = time.time()
    inject()
    rec.note(f"{fault}: injected")
    seen = None
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if probe is not None and seen is None:
                seen = probe()
            time.sleep(0.5)
    finally:
        rec.window(fault, start, pools)
        heal()
        rec.note(f"{fault}: healed")
    return seen


def pod_list_revoked(rig: Rig, rec: Recorder) -> None:
    """The controller's `list pods` revoked mid-burst, restored 15 s later."""
    burst(rig)
    scaled_up(rig)

    def condition_shown() -> Any:
        status = pool_status(rig.cluster, rig.ns, "pool-redis")
        known = condition(status, "InputsKnown")
        return known if known.get("reason") == "PodListFailed" else None

    shown = held(rig, rec, "pod-list-revoked", BOTH, 15, rig.revoke_pod_list,
                 rig.restore_pod_list, probe=condition_shown)
    rec.note(f"pod-list-revoked: InputsKnown seen as {shown}")


def api_server_faults(rig: Rig, rec: Recorder) -> None:
    """The API server slow (1.5 s each way), then resetting every connection."""
    assert rig.api is not None
    burst(rig)
    rig.api.latency(1500)
    rec.note("api: +1.5 s latency")
    time.sleep(10)
    rig.api.heal()
    held(rig, rec, "api-reset", BOTH, 10, rig.api.reset_peer, rig.api.heal)


def management_api_down(rig: Rig, rec: Recorder) -> None:
    """RabbitMQ's management API unreachable: in-flight unknown for the RabbitMQ pool."""
    assert rig.mgmt is not None
    burst(rig, pools=("rabbit",))
    wait_for("the RabbitMQ pool to scale up", lambda: replicas(rig, POOLS["rabbit"]) >= 3, 90)
    held(rig, rec, "rabbitmq-management-down", (POOLS["rabbit"],), 15, rig.mgmt.disable,
         rig.mgmt.enable)


def state_faults(rig: Rig, rec: Recorder) -> None:
    """Every pod's /state answers garbage, then too slowly, mid-burst."""
    burst(rig)
    scaled_up(rig)
    held(rig, rec, "state-garbage", BOTH, 10, lambda: rig.set_state_fault("garbage"),
         lambda: rig.set_state_fault(""))
    held(rig, rec, "state-slow", BOTH, 10, lambda: rig.set_state_fault("slow"),
         lambda: rig.set_state_fault(""))


def hpa_on_the_deployment(rig: Rig, rec: Recorder) -> None:
    """A user's HPA on the RabbitMQ pool's Deployment: the pool is refused, acts on
    nothing; the HPA keeps the max (never scaling down a busy pod itself)."""
    target = POOLS["rabbit"]
    burst(rig, pools=("rabbit",))
    start = time.time()
    apply(rig.cluster, rig.ns, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "users-hpa"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": target},
                 "minReplicas": MAX_REPLICAS, "maxReplicas": MAX_REPLICAS,
                 "metrics": [{"type": "Resource", "resource": {
                     "name": "cpu", "target": {"type": "Utilization",
                                               "averageUtilization": 80}}}]}})
    refused = wait_for("the pool refused", lambda: condition(
        pool_status(rig.cluster, rig.ns, "pool-rabbit"), "Ready").get("reason")
        == "TargetAlreadyScaled", 40)
    rec.note(f"hpa: refused {time.time() - start:.1f}s after the HPA: {refused}")
    time.sleep(12)
    rig.cluster.kubectl("-n", rig.ns, "delete", "hpa", "users-hpa")
    rec.hpa_window(start, "pool-rabbit")
    rec.note("hpa: removed")


def second_release(rig: Rig, rec: Recorder) -> None:
    """Release B's WorkerPool on release A's Redis Deployment, created later: refused."""
    from tests.k8s.chaos.rig import workerpool
    apply(rig.cluster, rig.ns, workerpool("pool-b-steal", POOLS["redis"], rig.urls["redis"],
                                          "chaos-b"))
    refused = wait_for("release B refuses its pool on A's Deployment", lambda: condition(
        pool_status(rig.cluster, rig.ns, "pool-b-steal"), "Ready").get("reason")
        == "TargetAlreadyScaled", 40)
    rec.note(f"second release: pool-b-steal {refused}")


def leader_killed_mid_scale(rig: Rig, rec: Recorder) -> None:
    """SIGKILL the leader while the pools scale down; the standby finishes the job."""
    burst(rig, count=12, seconds=(2.0, 4.0))
    scaled_up(rig)
    peak = {d: replicas(rig, d) for d in BOTH}
    wait_for("a scale-down to begin", lambda: any(replicas(rig, d) < peak[d] for d in BOTH),
             120, 0.2)
    leader = wait_leader(rig, "chaos-a")
    leader.kill()
    rec.note(f"leader {leader.identity} SIGKILLed mid scale-down")
    successor = rig.start_controller("chaos-a", f"a{len(rig.controllers) + 1}")
    new = wait_leader(rig, "chaos-a", 60)
    rec.note(f"leader now {new.identity} (fresh standby: {successor.identity})")


PHASES: dict[str, Callable[[Rig, Recorder], None]] = {
    "pod-list-revoked": pod_list_revoked, "api-server": api_server_faults,
    "rabbitmq-management": management_api_down, "state": state_faults,
    "hpa": hpa_on_the_deployment, "leader-kill": leader_killed_mid_scale,
}


def run(rig: Rig, rec: Recorder, rounds: int, seed: int) -> None:
    """Round 1 runs every phase in a fixed order; later rounds shuffle them."""
    rng = random.Random(seed)
    second_release(rig, rec)
    for number in range(rounds):
        order = list(PHASES)
        if number:
            rng.shuffle(order)
        for name in order:
            rec.note(f"round {number + 1}: {name}")
            PHASES[name](rig, rec)
        settled(rig)
