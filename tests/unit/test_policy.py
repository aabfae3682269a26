"""controller.policy: every branch by example, the invariants by property."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.policy import (
    Decision,
    History,
    Observation,
    PolicyConfig,
    desired_replicas,
)

C = 4  # slots per replica in the examples


def queue_cfg(**kw: Any) -> PolicyConfig:
    """The examples pin queue mode unless they ask for latency (the default)."""
    return PolicyConfig(**{"mode": "queue", **kw})


def obs(ready: int = 0, in_flight: int = 0, **kw: object) -> Observation:
    return Observation(ok=True, ready=ready, in_flight=in_flight, **kw)  # type: ignore[arg-type]


def decide(o: Observation, current: int, cfg: PolicyConfig | None = None,
           history: History | None = None, now: float = 1000.0, concurrency: int = C,
           ) -> Decision:
    return desired_replicas(o, current, concurrency, cfg or queue_cfg(max_replicas=100),
                            history or History(), now)


def run(seq: list[Observation], current: int, cfg: PolicyConfig, start: float = 0.0,
        step: float = 1.0) -> list[Decision]:
    """Feed observations tick by tick, applying each decision and carrying history."""
    history, out = History(), []
    for i, o in enumerate(seq):
        d = desired_replicas(o, current, C, cfg, history, start + i * step)
        out.append(d)
        history, current = d.history, d.desired
    return out


# -- configuration ---------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"min_replicas": -1}, "min_replicas"),
    ({"min_replicas": 5, "max_replicas": 4}, "max_replicas"),
    ({"min_replicas": 0, "max_replicas": 0}, "max_replicas"),
    ({"target_per_slot": 0}, "target_per_slot"),
    ({"target_wait_seconds": -1}, "target_wait_seconds"),
    ({"batch_seconds": -1}, "batch_seconds"),
    ({"activation_threshold": -1}, "activation_threshold"),
    ({"tolerance": 1.0}, "tolerance"),
    ({"max_step_up": 0}, "max_step_up"),
    ({"scale_down_step": 0}, "scale_down_step"),
    ({"scale_down_window_seconds": -1}, "scale_down_window_seconds"),
    ({"cooldown_seconds": -5}, "cooldown_seconds"),
    ({"on_error": "fallback"}, "fallback_replicas"),
    ({"on_error": "fallback", "fallback_replicas": 0}, "never scale to zero"),
    ({"mode": "cpu"}, "mode"),
    ({"target_per_slot": math.inf}, "finite"),
    ({"cooldown_seconds": math.nan}, "cooldown_seconds"),
    ({"on_error": "crash"}, "on_error"),
    ({"flap_backoff_max": -1}, "flap_backoff_max"),
    ({"pod_startup_seconds": -1}, "pod_startup_seconds"),
    ({"pod_startup_seconds": math.inf}, "pod_startup_seconds"),
])
def test_bad_config_names_the_field(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        queue_cfg(**kwargs)  # type: ignore[arg-type]


def test_bad_call_arguments_raise() -> None:
    with pytest.raises(ValueError, match="current"):
        decide(obs(1), -1)
    with pytest.raises(ValueError, match="concurrency"):
        decide(obs(1), 1, concurrency=0)


# -- queue and latency modes -----------------------------------------------------

def test_queue_mode_counts_in_flight_not_just_ready() -> None:
    d = decide(obs(ready=0, in_flight=20), 1)
    assert (d.desired, d.reason, d.raw_desired) == (5, "scale-up:queue", 5)
    assert d.details["work"] == 20 and d.details["mode"] == "queue"


def test_queue_mode_target_per_slot_divides_the_need() -> None:
    cfg = queue_cfg(max_replicas=100, target_per_slot=2.5)
    assert decide(obs(ready=100), 1, cfg).desired == 10  # 100 / (2.5 * 4)
    assert decide(obs(ready=101), 1, cfg).desired == 11  # rounded up


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
    cfg = PolicyConfig(max_replicas=100, scale_down_window_seconds=15,
                       pod_startup_seconds=10)
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
    cfg = PolicyConfig(min_replicas=0, target_wait_seconds=target, cooldown_seconds=60,
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


# -- activation and tolerance ----------------------------------------------------

def test_activation_threshold_gates_zero_to_one() -> None:
    cfg = queue_cfg(min_replicas=0, activation_threshold=5)
    quiet = decide(obs(ready=5), 0, cfg)
    assert (quiet.desired, quiet.reason) == (0, "hold:below-activation")
    woken = decide(obs(ready=6), 0, cfg)
    assert (woken.desired, woken.reason) == (2, "scale-up:queue")


def test_threshold_does_not_apply_once_running() -> None:
    cfg = queue_cfg(min_replicas=0, activation_threshold=5)
    assert decide(obs(ready=3), 1, cfg).desired == 1  # running pool keeps serving


def test_min_replicas_keeps_a_pool_up_below_activation() -> None:
    d = decide(obs(), 0, queue_cfg(min_replicas=2))
    assert (d.desired, d.reason) == (2, "clamp:min")


def test_tolerance_band_holds_small_changes() -> None:
    d = decide(obs(ready=42), 10)  # need 10.5: within 10%
    assert (d.desired, d.reason, d.raw_desired) == (10, "hold:tolerance", 11)
    assert decide(obs(ready=40), 10).reason == "hold:steady"
    assert decide(obs(ready=46), 10).desired == 12  # need 11.5: outside


# -- scale up --------------------------------------------------------------------

def test_scale_up_jumps_straight_to_the_need() -> None:
    d = decide(obs(ready=400), 1)
    assert (d.desired, d.reason) == (100, "scale-up:queue")
    assert d.history.last_scale_at == 1000.0


def test_max_step_up_limits_a_jump() -> None:
    d = decide(obs(ready=400), 2, queue_cfg(max_replicas=100, max_step_up=3))
    assert (d.desired, d.details["step_limited"]) == (5, 100)


def test_clamp_max() -> None:
    d = decide(obs(ready=4000), 1, queue_cfg(max_replicas=7))
    assert (d.desired, d.reason, d.raw_desired) == (7, "clamp:max", 1000)


def test_clamp_max_scales_an_oversized_pool_down() -> None:
    d = decide(obs(ready=40), 12, queue_cfg(max_replicas=7))
    assert (d.desired, d.reason) == (7, "clamp:max")


# -- scale down ------------------------------------------------------------------

def test_scale_down_waits_for_the_stabilization_window() -> None:
    cfg = queue_cfg(max_replicas=100, scale_down_window_seconds=30)
    seq = [obs(ready=40)] + [obs(ready=8)] * 40
    ds = run(seq, current=10, cfg=cfg)
    assert [d.desired for d in ds[:30]] == [10] * 30
    assert {d.reason for d in ds[1:30]} == {"hold:stabilizing"}
    assert (ds[30].desired, ds[30].reason) == (2, "scale-down:stabilized")


def test_scale_down_goes_to_the_window_maximum() -> None:
    cfg = queue_cfg(max_replicas=100, scale_down_window_seconds=30)
    seq = [obs(ready=40)] + [obs(ready=24)] * 10 + [obs(ready=4)] * 30
    ds = run(seq, current=10, cfg=cfg)
    assert ds[30].desired == 6  # the 24-task recommendation is still in the window
    assert ds[40].desired == 1


def test_scale_down_step_limits_each_decision() -> None:
    cfg = queue_cfg(max_replicas=100, scale_down_window_seconds=0, scale_down_step=2)
    ds = run([obs(ready=4)] * 4, current=10, cfg=cfg)
    assert [d.desired for d in ds] == [8, 6, 4, 2]


def test_zero_window_scales_down_at_once() -> None:
    cfg = queue_cfg(max_replicas=100, scale_down_window_seconds=0)
    assert decide(obs(ready=4), 10, cfg).desired == 1


# -- anti-flap -------------------------------------------------------------------

def _flap_cycle(cfg: PolicyConfig) -> list[Decision]:
    """10 replicas for load 40; a dip to 36 (one replica less); the load comes back."""
    seq = [obs(ready=40)] * 20 + [obs(ready=36)] * 20 + [obs(ready=40)] * 5
    return run(seq, current=10, cfg=cfg)


def test_small_step_up_after_small_step_down_extends_the_window() -> None:
    cfg = queue_cfg(max_replicas=100, tolerance=0.0, scale_down_window_seconds=10)
    ds = _flap_cycle(cfg)
    assert [d.desired for d in ds[28:30]] == [10, 9]  # the dip, after the 10 s window
    flap = ds[40]
    assert flap.desired == 10 and flap.history.flap_level >= 1
    assert flap.details["window_seconds"] == 10  # window grows from the next tick on


def test_flap_backoff_can_be_disabled() -> None:
    cfg = queue_cfg(max_replicas=100, tolerance=0.0, scale_down_window_seconds=10,
                       flap_backoff_max=0)
    assert _flap_cycle(cfg)[40].history.flap_level == 0


def test_big_drops_ignore_the_extended_window() -> None:
    """After a flap, a real fall in load still scales in after the base window."""
    cfg = queue_cfg(max_replicas=100, tolerance=0.0, scale_down_window_seconds=10)
    h = History(recommendations=tuple((float(t), 10) for t in range(0, 100)),
                flap_level=3, flap_level_at=50.0)
    d = desired_replicas(obs(ready=8), 10, C, cfg, h, 111.0)  # base window is clear
    assert (d.desired, d.reason) == (2, "scale-down:stabilized")
    small = desired_replicas(obs(ready=36), 10, C, cfg, h, 111.0)
    assert (small.desired, small.reason) == (10, "hold:stabilizing")  # 80 s window holds


def test_flap_level_relaxes_after_a_scale_down_sticks() -> None:
    cfg = queue_cfg(max_replicas=100, scale_down_window_seconds=10, flap_backoff_max=2)
    h = History(flap_level=2, flap_level_at=0.0, last_scale_down_at=100.0,
                last_scale_at=100.0)
    horizon = 2 * 10 * 4
    assert desired_replicas(obs(ready=4), 1, C, cfg, h, 100.0 + horizon - 1).history \
        .flap_level == 2
    assert desired_replicas(obs(ready=4), 1, C, cfg, h, 100.0 + horizon).history \
        .flap_level == 1


def test_activation_after_scale_to_zero_is_not_a_flap() -> None:
    cfg = queue_cfg(min_replicas=0, scale_down_window_seconds=10)
    h = History(last_scale_down_at=5.0, last_scale_at=5.0)
    assert desired_replicas(obs(ready=1), 0, C, cfg, h, 10.0).history.flap_level == 0


# -- scale to zero ---------------------------------------------------------------

def test_scale_to_zero_only_after_cooldown() -> None:
    cfg = queue_cfg(min_replicas=0, scale_down_window_seconds=10, cooldown_seconds=60)
    seq = [obs(ready=4)] + [obs()] * 70
    ds = run(seq, current=1, cfg=cfg)
    assert all(d.desired == 1 for d in ds[:60])
    assert ds[30].reason == "hold:cooldown"
    assert (ds[60].desired, ds[60].reason) == (0, "scale-to-zero:cooldown")


def test_keeps_one_replica_while_cooling_down() -> None:
    cfg = queue_cfg(min_replicas=0, scale_down_window_seconds=0, cooldown_seconds=60)
    h = History(last_active_at=990.0)
    d = decide(obs(), 5, cfg, h, now=1000.0)
    assert (d.desired, d.reason) == (1, "scale-down:keep-one-for-cooldown")


def test_in_flight_work_counts_as_activity() -> None:
    cfg = queue_cfg(min_replicas=0, scale_down_window_seconds=0, cooldown_seconds=60)
    seq = [obs(in_flight=1)] * 100 + [obs()] * 61  # last work seen at t=99
    ds = run(seq, current=1, cfg=cfg)
    assert all(d.desired == 1 for d in ds[:159])
    assert ds[159].desired == 0


def test_no_history_starts_the_cooldown_clock() -> None:
    cfg = queue_cfg(min_replicas=0, scale_down_window_seconds=0, cooldown_seconds=60)
    d = decide(obs(), 1, cfg, History(), now=5000.0)
    assert d.desired == 1 and d.history.last_active_at == 5000.0


def test_min_replicas_one_never_scales_to_zero() -> None:
    cfg = queue_cfg(min_replicas=1, scale_down_window_seconds=0, cooldown_seconds=0)
    d = decide(obs(), 3, cfg, History(last_active_at=0.0), now=1e6)
    assert (d.desired, d.reason) == (1, "clamp:min")


# -- busy pods -------------------------------------------------------------------

def test_never_below_busy_pods_and_asks_for_a_drain() -> None:
    cfg = queue_cfg(max_replicas=100, scale_down_window_seconds=0)
    d = decide(obs(ready=0, in_flight=6, busy_pods=6), 10, cfg)
    assert (d.desired, d.reason, d.drain_pods) == (6, "floor:busy-pods", 4)


def test_drain_deadline_passed_lifts_the_floor() -> None:
    cfg = queue_cfg(max_replicas=100, scale_down_window_seconds=0)
    o = obs(ready=0, in_flight=6, busy_pods=6, draining_deadline_passed=True)
    d = decide(o, 10, cfg)
    assert (d.desired, d.drain_pods) == (2, 0)


def test_busy_floor_never_scales_up() -> None:
    d = decide(obs(in_flight=1, busy_pods=9), 3, queue_cfg(scale_down_window_seconds=0))
    assert d.desired == 3  # more busy pods than replicas (a race) is not a reason to grow


def test_busy_floor_beats_the_max_clamp() -> None:
    d = decide(obs(in_flight=12, busy_pods=12), 12, queue_cfg(max_replicas=5))
    assert (d.desired, d.reason) == (12, "floor:busy-pods")


# -- metric errors ---------------------------------------------------------------

def test_error_holds_current() -> None:
    d = decide(Observation(ok=False, error="redis timeout"), 7,
               queue_cfg(min_replicas=0))
    assert (d.desired, d.reason, d.details["error"]) == (7, "hold:metrics-error", "redis timeout")


def test_ok_without_ready_depth_is_an_error() -> None:
    d = decide(Observation(ok=True, ready=None), 3)
    assert (d.desired, d.reason) == (3, "hold:metrics-error")


def test_error_fallback_uses_the_fixed_size() -> None:
    cfg = queue_cfg(on_error="fallback", fallback_replicas=4, max_replicas=10)
    d = decide(Observation(ok=False), 9, cfg)
    assert (d.desired, d.reason) == (4, "fallback:metrics-error")


def test_error_fallback_respects_busy_pods() -> None:
    cfg = queue_cfg(on_error="fallback", fallback_replicas=2)
    d = decide(Observation(ok=False, busy_pods=5), 8, cfg)
    assert (d.desired, d.reason) == (5, "floor:busy-pods")


def test_errors_restart_the_idle_clock() -> None:
    cfg = queue_cfg(min_replicas=0, scale_down_window_seconds=0, cooldown_seconds=60)
    seq = [obs()] * 50 + [Observation(ok=False)] * 50 + [obs()] * 61  # outage ends t=99
    ds = run(seq, current=1, cfg=cfg)
    assert all(d.desired == 1 for d in ds[:159])  # the outage did not count as idle
    assert ds[159].desired == 0


# -- purity and reporting --------------------------------------------------------

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


def test_pure_same_inputs_same_decision() -> None:
    h = History(recommendations=((990.0, 3),), last_active_at=995.0)
    o = obs(ready=17, in_flight=3, busy_pods=2)
    assert decide(o, 2, history=h) == decide(o, 2, history=h)
    assert h.recommendations == ((990.0, 3),)


def test_history_keeps_only_the_window() -> None:
    cfg = queue_cfg(scale_down_window_seconds=30)
    ds = run([obs(ready=4)] * 100, current=1, cfg=cfg)
    assert len(ds[-1].history.recommendations) == 30


# -- properties ------------------------------------------------------------------

configs = st.builds(
    PolicyConfig,
    mode=st.sampled_from(["queue", "latency"]),
    min_replicas=st.integers(0, 5),
    max_replicas=st.integers(5, 60),
    target_per_slot=st.floats(0.25, 8),
    target_wait_seconds=st.floats(1, 120),
    activation_threshold=st.integers(0, 10),
    tolerance=st.floats(0, 0.5),
    max_step_up=st.none() | st.integers(1, 20),
    scale_down_window_seconds=st.floats(0, 120),
    scale_down_step=st.none() | st.integers(1, 10),
    cooldown_seconds=st.floats(0, 600),
    pod_startup_seconds=st.floats(0, 120),
    batch_seconds=st.just(0.0) | st.floats(0, 120),
)
observations = st.builds(
    Observation,
    ok=st.just(True),
    ready=st.integers(0, 5000),
    in_flight=st.integers(0, 500),
    arrival_rate=st.none() | st.floats(0, 200) | st.sampled_from([math.nan, math.inf]),
    completion_rate=st.none() | st.floats(0, 200),
    service_time_seconds=st.none() | st.floats(0, 600) | st.just(math.nan),
    busy_pods=st.integers(0, 80),
    starting_pods=st.integers(0, 80),
    pod_startup_seconds=st.none() | st.floats(0, 300) | st.just(math.nan),
    draining_deadline_passed=st.booleans(),
)
histories = st.builds(
    History,
    recommendations=st.lists(st.tuples(st.floats(0, 1000), st.integers(0, 80)),
                             max_size=5).map(tuple),
    last_active_at=st.none() | st.floats(0, 1000),
    queued_since=st.none() | st.floats(0, 1000),
    batch_releasing=st.booleans(),
)
currents = st.integers(0, 80)
concurrencies = st.integers(1, 16)


@settings(deadline=None)
@given(observations, currents, concurrencies, configs, histories)
def test_bounds(o: Observation, current: int, c: int, cfg: PolicyConfig, h: History) -> None:
    d = desired_replicas(o, current, c, cfg, h, 1000.0)
    assert d.desired >= cfg.min_replicas
    if d.reason != "floor:busy-pods":
        assert d.desired <= cfg.max_replicas
    assert d.desired <= max(cfg.max_replicas, current)
    assert d.reason and d.details


@settings(deadline=None)
@given(observations, currents, concurrencies, configs, histories, st.integers(1, 500),
       st.sampled_from(["ready", "in_flight"]))
def test_more_backlog_never_fewer_replicas(o: Observation, current: int, c: int,
                                           cfg: PolicyConfig, h: History, extra: int,
                                           field: str) -> None:
    more = replace(o, **{field: getattr(o, field) + extra})
    low = desired_replicas(o, current, c, cfg, h, 1000.0)
    high = desired_replicas(more, current, c, cfg, h, 1000.0)
    assert high.desired >= low.desired


@settings(deadline=None)
@given(currents, concurrencies, configs, histories, st.integers(0, 80), st.booleans())
def test_error_never_scales_to_zero(current: int, c: int, cfg: PolicyConfig, h: History,
                                    busy: int, fallback: bool) -> None:
    if fallback:
        cfg = replace(cfg, on_error="fallback", fallback_replicas=max(1, cfg.min_replicas))
    d = desired_replicas(Observation(ok=False, busy_pods=busy), current, c, cfg, h, 1000.0)
    if current > 0 or fallback:
        assert d.desired >= 1
    if not fallback:
        assert d.desired == current
    assert d.reason.endswith(":metrics-error") or d.reason == "floor:busy-pods"


@settings(deadline=None)
@given(observations, currents, concurrencies, configs, histories)
def test_never_below_busy_pods(o: Observation, current: int, c: int, cfg: PolicyConfig,
                               h: History) -> None:
    d = desired_replicas(o, current, c, cfg, h, 1000.0)
    if not o.draining_deadline_passed:
        assert d.desired >= min(o.busy_pods, current)
    assert d.desired - d.drain_pods >= 0 and d.drain_pods >= 0


@settings(deadline=None)
@given(st.integers(0, 5000), st.integers(0, 500), currents, concurrencies, configs)
def test_scale_up_is_one_step_to_the_need(ready: int, in_flight: int, current: int, c: int,
                                          cfg: PolicyConfig) -> None:
    cfg = replace(cfg, mode="queue", max_step_up=None)
    d = desired_replicas(obs(ready, in_flight), current, c, cfg, History(), 1000.0)
    exact_need = (ready + in_flight) / (cfg.target_per_slot * c)
    need = math.ceil(exact_need - 1e-9)
    if d.desired > current:
        assert d.desired == min(need, cfg.max_replicas) or d.reason == "clamp:min"
    # The tolerance band compares the fractional need (11.01 of 9 is within 25%).
    if exact_need > current * (1 + cfg.tolerance) and current >= cfg.min_replicas and (
            current > 0 or ready + in_flight > cfg.activation_threshold):
        assert d.desired == min(need, cfg.max_replicas)  # no intermediate steps


@settings(deadline=None)
@given(st.integers(2, 60), st.floats(1, 120), st.floats(1, 600), st.integers(1, 16))
def test_stabilization_and_cooldown_timing(peak: int, window: float, cooldown: float,
                                           c: int) -> None:
    cfg = queue_cfg(min_replicas=0, max_replicas=60, scale_down_window_seconds=window,
                       cooldown_seconds=cooldown)
    h = History()
    first = desired_replicas(obs(ready=peak * c), 0, c, cfg, h, 0.0)
    current, h = first.desired, first.history
    assert current == peak
    t = 0.0
    while current > 0:
        t += 0.5
        d = desired_replicas(obs(), current, c, cfg, h, t)
        if d.desired < current and d.desired > 0:
            assert t >= window  # no scale-down inside the window
        if d.desired == 0:
            assert t >= cooldown and t >= window
            assert t < max(cooldown, window) + 0.5 + 1e-9  # and not later than due
        current, h = d.desired, d.history
    assert current == 0


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.integers(1, 400), st.integers(1, 16), st.floats(0.0, 0.3), st.integers(0, 2**32))
def test_no_flapping_under_noisy_constant_load(load: int, c: int, noise: float,
                                               seed: int) -> None:
    """A steady load with ±noise must settle: few direction changes in 20 minutes."""
    rng = random.Random(seed)
    cfg = queue_cfg(min_replicas=0, max_replicas=500)
    history, current, directions = History(), 0, []
    for tick in range(1200):
        work = max(0, round(load * (1 + rng.uniform(-noise, noise))))
        ready = rng.randint(0, work)
        d = desired_replicas(obs(ready, work - ready, busy_pods=0), current, c, cfg,
                             history, float(tick))
        if d.desired != current:
            directions.append(1 if d.desired > current else -1)
        history, current = d.history, d.desired
    reversals = sum(1 for a, b in itertools.pairwise(directions) if a != b)
    assert reversals <= 6, directions


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.floats(0.05, 50), st.floats(0.2, 60), st.integers(1, 16), st.floats(0.0, 0.3),
       st.integers(0, 2**32))
def test_latency_mode_does_not_flap_under_noisy_constant_load(
        rate: float, service: float, c: int, noise: float, seed: int) -> None:
    """Latency mode on a steady stream: ±noise on busy slots and queue, a smoothed rate.

    Work never stops (0 <-> 1 is the cooldown's business, not a flap)."""
    rng = random.Random(seed)
    cfg = PolicyConfig(min_replicas=0, max_replicas=500)
    history, current, directions = History(), 0, []
    for tick in range(1200):
        busy = max(1, round(rate * service * (1 + rng.uniform(-noise, noise))))
        ready = rng.randint(0, round(busy * noise)) if rng.random() < 0.5 else 0
        o = obs(ready, busy, arrival_rate=rate * (1 + rng.uniform(-noise, noise) / 3),
                service_time_seconds=service)
        d = desired_replicas(o, current, c, cfg, history, float(tick))
        if d.desired != current:
            directions.append(1 if d.desired > current else -1)
        history, current = d.history, d.desired
    reversals = sum(1 for a, b in itertools.pairwise(directions) if a != b)
    assert reversals <= 6, directions
