"""controller.policy: the invariants, by property (examples: test_policy.py)."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.policy import History, Observation, PolicyConfig, desired_replicas
from tests.unit.test_policy import obs, queue_cfg


def edged(low: float, high: float, *extra: float) -> st.SearchStrategy[float]:
    """Floats in [low, high], plus the extremes a user or a pod can write: the smallest
    subnormal, values next to the bounds, the largest double (issue #10, item 4)."""
    edges = [x for x in (low, high, 5e-324, 1e-320, 1e-300, 1e-9, 1e300, 1e308, *extra)
             if low <= x <= high]
    return st.floats(low, high) | st.sampled_from(edges)


def positive(high: float) -> st.SearchStrategy[float]:
    return edged(0.0, high).filter(lambda x: x > 0)


SECONDS = 86_400.0  # controller.policyconfig.SECONDS_BOUND
configs = st.builds(
    PolicyConfig,
    mode=st.sampled_from(["queue", "latency"]),
    min_replicas=st.integers(0, 5),
    max_replicas=st.integers(5, 60) | st.just(10_000),
    target_per_slot=st.floats(0.25, 8) | positive(1e6),
    target_wait_seconds=st.floats(1, 120) | positive(SECONDS),
    activation_threshold=st.integers(0, 10) | st.just(10**9),
    tolerance=st.floats(0, 0.5) | st.just(0.99),
    max_step_up=st.none() | st.integers(1, 20),
    scale_down_window_seconds=st.none() | st.floats(0, 120) | edged(0.0, SECONDS),
    scale_down_step=st.none() | st.integers(1, 10),
    flap_backoff_max=st.integers(0, 16),
    cooldown_seconds=st.none() | st.floats(0, 600) | edged(0.0, SECONDS),
    pod_startup_seconds=st.floats(0, 120) | edged(0.0, SECONDS),
    batch_seconds=st.just(0.0) | st.floats(0, 120) | edged(0.0, SECONDS),
)
observations = st.builds(
    Observation,
    ok=st.just(True),
    ready=st.integers(0, 5000) | st.just(10**12),
    in_flight=st.integers(0, 500) | st.just(10**12),
    arrival_rate=st.none() | st.floats(0, 200) | edged(0.0, 1e308)
    | st.sampled_from([math.nan, math.inf]),
    completion_rate=st.none() | st.floats(0, 200) | edged(0.0, 1e308),
    service_time_seconds=st.none() | st.floats(0, 600) | edged(0.0, 1e308)
    | st.just(math.nan),
    busy_pods=st.integers(0, 80),
    starting_pods=st.integers(0, 80),
    pod_startup_seconds=st.none() | st.floats(0, 300) | edged(0.0, 1e308) | st.just(math.nan),
    draining_deadline_passed=st.booleans(),
    unknown=st.just(()) | st.sampled_from([("pods",), ("in-flight",), ("pod-state",)]),
)
histories = st.builds(
    History,
    recommendations=st.lists(st.tuples(st.floats(0, 1000), st.integers(0, 80)),
                             max_size=5).map(tuple),
    last_active_at=st.none() | st.floats(0, 1000),
    last_scale_at=st.none() | st.floats(0, 1000),
    last_scale_down_at=st.none() | st.floats(0, 1000),
    flap_level=st.integers(0, 20),
    flap_level_at=st.none() | st.floats(0, 1000),
    queued_since=st.none() | st.floats(0, 1000),
    batch_releasing=st.booleans(),
    failed_reads=st.integers(0, 10),
)
currents = st.integers(0, 80)
concurrencies = st.integers(1, 16)


@settings(deadline=None, max_examples=400)
@given(observations, currents | st.just(10_000), st.integers(1, 1024), configs, histories,
       st.floats(0, 1e12))
def test_total_over_everything_the_crd_and_state_can_carry(
        o: Observation, current: int, c: int, cfg: PolicyConfig, h: History,
        now: float) -> None:
    """Never raises; an int in range; every number it reports is finite."""
    d = desired_replicas(o, current, c, cfg, h, now)
    assert isinstance(d.desired, int)
    assert cfg.min_replicas <= d.desired <= max(cfg.max_replicas, current)
    for key, value in d.details.items():
        assert not isinstance(value, float) or math.isfinite(value), (key, value)
    if o.unknown:
        assert d.desired >= current and d.drain_pods == 0


@settings(deadline=None)
@given(observations, currents, concurrencies, configs, histories)
def test_bounds(o: Observation, current: int, c: int, cfg: PolicyConfig, h: History) -> None:
    d = desired_replicas(o, current, c, cfg, h, 1000.0)
    assert d.desired >= cfg.min_replicas
    # Busy pods and unknown inputs may hold a pool above a lowered max, never raise it.
    if d.reason != "floor:busy-pods" and not d.reason.startswith("hold:unknown-"):
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
    if current > 0 or (fallback and h.failed_reads + 1 >= cfg.fallback_failure_threshold):
        assert d.desired >= 1
    if not fallback:
        assert d.desired == current
    assert d.reason in ("hold:metrics-error", "fallback:metrics-error",
                        "fallback:stabilizing", "floor:busy-pods"), d.reason


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
    need = math.ceil(exact_need - 1e-9) if exact_need < 1e15 else 10**15  # tiny targetPerSlot
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
