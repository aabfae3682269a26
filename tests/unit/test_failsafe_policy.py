"""Issue #10, the policy's part: a failed read, a fallback, extreme input and the
latency knobs. Each test here failed on 6e697a6 (see the issue's numbered items).
"""

from __future__ import annotations

import math

import pytest

from controller.policy import History, Observation, PolicyConfig, desired_replicas
from tests.unit.test_policy import decide, obs, queue_cfg

FAILED = Observation(ok=False, error="ConnectionError: refused")


# -- item 3: fallback after a failure threshold, through the window and step limits ----

def test_fallback_waits_for_the_failure_threshold() -> None:
    cfg = queue_cfg(on_error="fallback", fallback_replicas=2, max_replicas=10)
    first = decide(FAILED, 10, cfg)
    assert (first.desired, first.reason) == (10, "hold:metrics-error")


def test_fallback_moves_through_the_window_and_the_step_limit() -> None:
    cfg = queue_cfg(on_error="fallback", fallback_replicas=2, max_replicas=10,
                    scale_down_window_seconds=30, scale_down_step=3)
    history = History(recommendations=((995.0, 10),))   # 10 was needed 5 s ago
    sizes = []
    current, now = 10, 1000.0
    for _ in range(40):
        d = desired_replicas(FAILED, current, 4, cfg, history, now)
        assert d.desired >= current - 3, d          # never more than the step
        if d.desired < current:
            assert now - 995.0 >= 30, d              # not before the window let 10 go
        sizes.append(d.desired)
        current, history, now = d.desired, d.history, now + 1.0
    assert sizes[:3] == [10, 10, 10]
    assert sizes[-1] == 2 and sizes.count(10) >= 25, sizes


def test_fallback_up_is_at_once_after_the_threshold() -> None:
    cfg = queue_cfg(on_error="fallback", fallback_replicas=6, max_replicas=10)
    history, current = History(), 2
    sizes = []
    for tick in range(4):
        d = desired_replicas(FAILED, current, 4, cfg, history, 1000.0 + tick)
        sizes.append(d.desired)
        current, history = d.desired, d.history
    assert sizes == [2, 2, 6, 6]


def test_a_good_read_resets_the_failure_count() -> None:
    cfg = queue_cfg(on_error="fallback", fallback_replicas=6, max_replicas=10)
    history, current = History(), 2
    reads = [FAILED, FAILED, obs(ready=8), FAILED, FAILED]
    for tick, o in enumerate(reads):
        d = desired_replicas(o, current, 4, cfg, history, 1000.0 + tick)
        current, history = d.desired, d.history
    assert current == 2, "two failures after a good read stay below the threshold of 3"


# -- item 4: input the CRD and /state can carry never raises ----------------------------

@pytest.mark.parametrize("target_per_slot", [1e-320, 5e-324, 1e-300])
def test_tiny_target_per_slot_scales_to_max_instead_of_raising(target_per_slot: float) -> None:
    cfg = queue_cfg(target_per_slot=target_per_slot, max_replicas=10)
    d = decide(obs(ready=5), 1, cfg)
    assert (d.desired, d.reason) == (10, "clamp:max")


@pytest.mark.parametrize("service", [1e308, 1e200, 5e-324])
@pytest.mark.parametrize("rate", [1e308, 1.0, 5e-324])
def test_extreme_service_times_and_rates_decide(service: float, rate: float) -> None:
    cfg = PolicyConfig(max_replicas=10, target_wait_seconds=1e-300)
    for ready, in_flight, current in ((10, 4, 1), (0, 0, 5), (10**9, 10**9, 0)):
        d = decide(obs(ready=ready, in_flight=in_flight, arrival_rate=rate,
                       service_time_seconds=service, starting_pods=current), current, cfg)
        assert 1 <= d.desired <= 10 or (d.desired == 0 and ready + in_flight == 0)


def test_flap_backoff_max_is_bounded() -> None:
    with pytest.raises(ValueError, match="flap_backoff_max"):
        PolicyConfig(flap_backoff_max=1100)


def test_the_longest_flap_window_with_a_tiny_base_window_decides() -> None:
    cfg = queue_cfg(flap_backoff_max=16, scale_down_window_seconds=1e-320, max_replicas=10)
    history = History(recommendations=((999.0, 4),), last_scale_at=999.0,
                      last_scale_down_at=999.0, flap_level=16, flap_level_at=0.0)
    d = decide(obs(ready=20), 4, cfg, history)        # a small step up right after a down
    assert d.desired == 5
    d = decide(obs(ready=4), 4, cfg, history, now=1e300)
    assert d.desired <= 4 and math.isfinite(float(d.details["window_seconds"]))


# -- item 5: the user's window and cooldown are honoured in latency mode ---------------

def latency(ready: int, in_flight: int, **kw: object) -> Observation:
    return obs(ready=ready, in_flight=in_flight, **{
        "arrival_rate": 1.0, "service_time_seconds": 2.0, **kw})


def test_an_explicit_cooldown_is_honoured_in_latency_mode() -> None:
    cfg = PolicyConfig(min_replicas=0, cooldown_seconds=600, pod_startup_seconds=10,
                       scale_down_window_seconds=0)
    d = decide(latency(0, 0, arrival_rate=0.0), 1, cfg, History(last_active_at=1000.0 - 20))
    assert (d.desired, d.reason) == (1, "hold:cooldown")
    d = decide(latency(0, 0, arrival_rate=0.0), 1, cfg, History(last_active_at=1000.0 - 600))
    assert d.desired == 0


def test_an_explicit_window_is_honoured_in_latency_mode() -> None:
    cfg = PolicyConfig(max_replicas=100, scale_down_window_seconds=300, pod_startup_seconds=10)
    history = History(recommendations=((988.0, 10),))   # 10 needed 12 s ago
    d = decide(latency(0, 4), 10, cfg, history)
    assert (d.desired, d.reason) == (10, "hold:stabilizing")


def test_automatic_window_and_cooldown_keep_the_fast_latency_defaults() -> None:
    cfg = PolicyConfig(max_replicas=100, min_replicas=0, pod_startup_seconds=10)
    assert cfg.scale_down_window_seconds is None and cfg.cooldown_seconds is None
    history = History(recommendations=((988.0, 10),))
    assert decide(latency(0, 4), 10, cfg, history).desired == 1       # after one start-up
    idle = History(last_active_at=1000.0 - 10)
    assert decide(latency(0, 0, arrival_rate=0.0), 1, cfg, idle).desired == 0


def test_env_settings_are_bounded_like_the_policy() -> None:
    from controller.settings import load_settings
    from worker.errors import ConfigError
    with pytest.raises(ConfigError, match="FLAP_BACKOFF_MAX"):
        load_settings(flap_backoff_max=1100)
    with pytest.raises(ConfigError, match="SCALE_DOWN_WINDOW_SECONDS"):
        load_settings(scale_down_window_seconds=1e308)
