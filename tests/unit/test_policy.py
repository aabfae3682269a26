"""controller.policy: every branch by example, the invariants by property."""

from __future__ import annotations

import math
from typing import Any

import pytest

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


# -- queue mode (latency mode and batching: test_policy_latency.py) -----------------

def test_queue_mode_counts_in_flight_not_just_ready() -> None:
    d = decide(obs(ready=0, in_flight=20), 1)
    assert (d.desired, d.reason, d.raw_desired) == (5, "scale-up:queue", 5)
    assert d.details["work"] == 20 and d.details["mode"] == "queue"


def test_queue_mode_target_per_slot_divides_the_need() -> None:
    cfg = queue_cfg(max_replicas=100, target_per_slot=2.5)
    assert decide(obs(ready=100), 1, cfg).desired == 10  # 100 / (2.5 * 4)
    assert decide(obs(ready=101), 1, cfg).desired == 11  # rounded up


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
    # Threshold and window off: the fallback size at once (the defaults: test_failsafe_policy).
    cfg = queue_cfg(on_error="fallback", fallback_replicas=4, max_replicas=10,
                    fallback_failure_threshold=1, scale_down_window_seconds=0)
    d = decide(Observation(ok=False), 9, cfg)
    assert (d.desired, d.reason) == (4, "fallback:metrics-error")


def test_error_fallback_respects_busy_pods() -> None:
    cfg = queue_cfg(on_error="fallback", fallback_replicas=2, fallback_failure_threshold=1,
                    scale_down_window_seconds=0)
    d = decide(Observation(ok=False, busy_pods=5), 8, cfg)
    assert (d.desired, d.reason) == (5, "floor:busy-pods")


def test_errors_restart_the_idle_clock() -> None:
    cfg = queue_cfg(min_replicas=0, scale_down_window_seconds=0, cooldown_seconds=60)
    seq = [obs()] * 50 + [Observation(ok=False)] * 50 + [obs()] * 61  # outage ends t=99
    ds = run(seq, current=1, cfg=cfg)
    assert all(d.desired == 1 for d in ds[:159])  # the outage did not count as idle
    assert ds[159].desired == 0


# -- purity and reporting --------------------------------------------------------

def test_pure_same_inputs_same_decision() -> None:
    h = History(recommendations=((990.0, 3),), last_active_at=995.0)
    o = obs(ready=17, in_flight=3, busy_pods=2)
    assert decide(o, 2, history=h) == decide(o, 2, history=h)
    assert h.recommendations == ((990.0, 3),)


def test_history_keeps_only_the_window() -> None:
    cfg = queue_cfg(scale_down_window_seconds=30)
    ds = run([obs(ready=4)] * 100, current=1, cfg=cfg)
    assert len(ds[-1].history.recommendations) == 30
