"""controller.policy in latency mode, and opt-in batching of a trickle, by example."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from controller.policy import History, Observation, PolicyConfig
from tests.unit.test_policy import decide, obs, queue_cfg

# -- latency mode ------------------------------------------------------------------

def latency(ready: int = 80, in_flight: int = 8, **kw: Any) -> Observation:
    """4 tasks/s of 2 s tasks: the steady stream needs 4*2/4 = 2 pods."""
    return obs(ready, in_flight, **{"arrival_rate": 4.0, "service_time_seconds": 2.0, **kw})


def test_latency_is_the_default_mode() -> None:
    assert PolicyConfig().mode == "latency"
    assert PolicyConfig().target_wait_seconds > PolicyConfig().pod_startup_seconds


def test_latency_mode_sizes_new_pods_for_the_wait_left_after_start_up() -> None:
    cfg = PolicyConfig(max_replicas=100, target_wait_seconds=30, pod_startup_seconds=10)
    d = decide(latency(), 1, cfg)
    # steady 2; no spare running pod; a new slot starts (30-10+2)/2 = 11 tasks in
    # time, 44 per pod: 80/44 = 1.82 -> 3.82
    assert (d.desired, d.reason, d.details["mode"]) == (4, "scale-up:latency", "latency")
    assert d.details["need"] == pytest.approx(2 + 80 / 44, abs=1e-3)


def test_latency_mode_running_pods_work_the_whole_target() -> None:
    cfg = PolicyConfig(max_replicas=100, target_wait_seconds=10)
    # 10 running pods, 8 beyond the stream: the backlog needs 80*2/(4*10) = 4 of them
    assert decide(latency(), 10, cfg).raw_desired == 6
    # the same pods still starting help only after start-up: at a 10 s target a new
    # slot starts one task in time, so each of the 80 tasks needs a slot of its own
    assert decide(latency(starting_pods=10), 10, cfg).raw_desired == 2 + 20


def test_latency_mode_uses_the_measured_start_up() -> None:
    cfg = PolicyConfig(max_replicas=100, target_wait_seconds=30, pod_startup_seconds=10)
    slow = decide(latency(pod_startup_seconds=30.0), 1, cfg)
    assert (slow.raw_desired, slow.details["startup_seconds"]) == (2 + 20, 30.0)
    bogus = decide(latency(pod_startup_seconds=math.nan), 1, cfg)
    assert (bogus.raw_desired, bogus.details["startup_seconds"]) == (4, 10.0)


def test_latency_mode_trusts_busy_slots_over_a_stale_rate_when_nothing_waits() -> None:
    cfg = PolicyConfig(max_replicas=100)
    # the trailing rate still counts a burst already served; 4 busy slots = 1 pod
    assert decide(latency(ready=0, in_flight=4, arrival_rate=20.0), 12, cfg,
                  ).details["need"] == 1.0
    assert decide(latency(ready=1, in_flight=4, arrival_rate=20.0), 12, cfg,
                  ).details["need"] > 10


def test_latency_mode_releases_idle_capacity_after_one_start_up_time() -> None:
    cfg = PolicyConfig(max_replicas=100, pod_startup_seconds=10)  # automatic 15 s window
    h = History(recommendations=((989.0, 12),))  # 11 s ago, inside the 15 s window
    burst_over = decide(latency(ready=0, in_flight=4), 12, cfg, h)
    assert (burst_over.desired, burst_over.reason) == (1, "scale-down:stabilized")
    queued = decide(latency(ready=2, in_flight=4), 12, cfg, h)
    assert (queued.desired, queued.reason) == (12, "hold:stabilizing")
    # a drop by less than half may be noise: the full window holds
    noisy = decide(latency(ready=0, in_flight=28, arrival_rate=14.0), 12, cfg, h)
    assert (noisy.desired, noisy.reason) == (12, "hold:stabilizing")
    # the queue emptied only 5 s ago (less than a start-up time): the full window holds
    recent = replace(h, last_queued_at=995.0)
    assert decide(latency(ready=0, in_flight=4), 12, cfg, recent).desired == 12
    assert decide(obs(ready=0, in_flight=4), 12, cfg, h).desired == 12  # queue-fallback


@pytest.mark.parametrize(("target", "idle", "desired"), [
    (30.0, 10.0, 0),   # start-up 10 s <= target: a cold start still meets it
    (30.0, 9.0, 1),
    (5.0, 10.0, 1),    # start-up above the target: the full 60 s cooldown
    (5.0, 60.0, 0),
])
def test_latency_mode_cooldown_is_one_start_up_when_a_cold_start_meets_the_target(
        target: float, idle: float, desired: int) -> None:
    cfg = PolicyConfig(min_replicas=0, target_wait_seconds=target,  # automatic cooldown
                       scale_down_window_seconds=0, pod_startup_seconds=10)
    d = decide(latency(ready=0, in_flight=0), 1, cfg, History(last_active_at=1000.0 - idle))
    assert d.desired == desired


@pytest.mark.parametrize("o", [
    obs(ready=40, arrival_rate=None, service_time_seconds=2.0),
    obs(ready=40, arrival_rate=3.0, service_time_seconds=None),
    obs(ready=40, arrival_rate=3.0, service_time_seconds=0.0),
])
def test_latency_mode_falls_back_to_queue_with_a_reason(o: Observation) -> None:
    cfg = queue_cfg(mode="latency", max_replicas=100)
    d = decide(o, 1, cfg)
    assert (d.desired, d.reason) == (10, "scale-up:queue-fallback")


@pytest.mark.parametrize(("rate", "service"), [
    (math.nan, 2.0), (math.inf, 2.0), (3.0, math.nan), (3.0, math.inf)])
def test_latency_mode_treats_non_finite_metrics_as_unknown(rate: float,
                                                           service: float) -> None:
    cfg = queue_cfg(mode="latency", max_replicas=100)
    d = decide(obs(ready=40, arrival_rate=rate, service_time_seconds=service), 1, cfg)
    assert (d.desired, d.reason) == (10, "scale-up:queue-fallback")


def test_latency_mode_keeps_one_replica_for_any_work() -> None:
    cfg = queue_cfg(mode="latency", min_replicas=0, max_replicas=10)
    d = decide(obs(ready=1, arrival_rate=0.0, service_time_seconds=0.01), 0, cfg)
    assert d.desired == 1


# -- batching a trickle (opt-in) ------------------------------------------------------

def batching(**kw: Any) -> PolicyConfig:
    return PolicyConfig(**{"min_replicas": 0, "max_replicas": 20, "batch_seconds": 20.0,
                           "target_wait_seconds": 300.0, **kw})


def trickle(ready: int = 0, in_flight: int = 0, **kw: Any) -> Observation:
    """1 task/s of 2 s tasks: half of one 4-slot pod."""
    return obs(ready, in_flight, **{"arrival_rate": 1.0, "service_time_seconds": 2.0, **kw})


def test_batching_holds_queued_work_at_zero_until_the_oldest_waited_batch_seconds() -> None:
    cfg = batching()
    first = decide(trickle(ready=3), 0, cfg, now=100.0)
    assert (first.desired, first.reason) == (0, "hold:batching")
    assert first.history.queued_since == 100.0
    later = decide(trickle(ready=15), 0, cfg, first.history, now=115.0)
    assert (later.desired, later.reason) == (0, "hold:batching")
    assert later.details["batch_waited_seconds"] == 15.0
    due = decide(trickle(ready=20), 0, cfg, later.history, now=120.0)
    assert due.desired == 1 and due.reason.startswith("scale-up")


def test_batching_drains_the_last_pod_once_nothing_is_queued_and_keeps_draining_it() -> None:
    cfg = batching()
    empty = decide(trickle(ready=0, in_flight=2, busy_pods=1), 1, cfg, now=200.0)
    assert (empty.desired, empty.drain_pods, empty.reason) == (1, 1, "floor:busy-pods")
    assert empty.history.batch_releasing
    # New arrivals queue for the next batch instead of reopening the draining pod.
    arrivals = decide(trickle(ready=2, in_flight=1, busy_pods=1), 1, cfg, empty.history,
                      now=201.0)
    assert (arrivals.desired, arrivals.drain_pods) == (1, 1)
    idle = decide(trickle(ready=3), 1, cfg, arrivals.history, now=202.0)
    assert (idle.desired, idle.reason) == (0, "scale-to-zero:batching")
    # The batch clock started with the first arrival that found the pod draining.
    assert idle.history.queued_since == 201.0
    gone = decide(trickle(ready=4), 0, cfg, idle.history, now=203.0)
    assert (gone.desired, gone.reason) == (0, "hold:batching")
    assert gone.details["batch_waited_seconds"] == 2.0 and not gone.history.batch_releasing


def test_batching_stops_when_the_load_outgrows_one_pod() -> None:
    cfg = batching()
    releasing = History(batch_releasing=True)
    busy = decide(trickle(ready=400, in_flight=4, busy_pods=1, arrival_rate=30.0), 1, cfg,
                  releasing, now=300.0)
    assert busy.desired > 1 and busy.drain_pods == 0 and not busy.history.batch_releasing
    burst_at_zero = decide(trickle(ready=400), 0, cfg, now=300.0)
    assert burst_at_zero.desired > 1


@pytest.mark.parametrize("cfg", [
    batching(batch_seconds=0.0),   # the default: off
    batching(min_replicas=1),      # a pool that may not reach zero
    batching(mode="queue"),        # queue mode does not know the arrival rate
])
def test_batching_applies_only_when_enabled_in_latency_mode_with_min_zero(
        cfg: PolicyConfig) -> None:
    d = decide(trickle(ready=3), 0, cfg, now=100.0)
    assert d.desired >= 1
    d = decide(trickle(ready=0, in_flight=2, busy_pods=1), 1, cfg, now=100.0)
    assert d.drain_pods == 0 and not d.history.batch_releasing


def test_batching_waits_for_starting_pods() -> None:
    d = decide(trickle(ready=0, in_flight=0, starting_pods=1), 1, batching(), now=100.0)
    assert d.desired == 1
