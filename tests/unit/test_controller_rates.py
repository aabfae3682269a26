"""Rate estimation and pod ranking: pure math on made-up samples."""

from __future__ import annotations

import math

import pytest

from controller.podstate import PodState, deletion_costs, rank_for_removal, service_time_of
from controller.sources import Ewma, RateEstimator


def test_ewma_converges_and_ignores_interval_size() -> None:
    fine, coarse = Ewma(10.0), Ewma(10.0)
    fine.update(0.0, 1.0)
    coarse.update(0.0, 1.0)
    for _ in range(20):
        fine.update(5.0, 0.5)
    for _ in range(5):
        coarse.update(5.0, 2.0)
    # Same elapsed time (10 s) gives the same weight whatever the poll interval.
    assert fine.value == pytest.approx(coarse.value)
    assert fine.value == pytest.approx(5.0 * (1 - math.exp(-1.0)))


def test_arrivals_from_backlog_growth_plus_counter_completions() -> None:
    est = RateEstimator(tau_seconds=0.001)  # no smoothing: check the raw formula
    est.update(0.0, 100, completed={"a": 10, "b": 0})
    rates = est.update(2.0, 110, completed={"a": 20, "b": 10})
    # 20 finished in 2 s -> 10/s; backlog grew by 10 -> arrivals 5 + 10 = 15/s.
    assert rates.completion == pytest.approx(10.0, rel=1e-3)
    assert rates.arrival == pytest.approx(15.0, rel=1e-3)


def test_restarted_or_new_pods_never_give_negative_completions() -> None:
    est = RateEstimator(tau_seconds=0.001)
    est.update(0.0, 50, completed={"a": 500, "b": 7})
    rates = est.update(1.0, 50, completed={"a": 3, "c": 900})  # a restarted, b gone, c new
    assert rates.completion == pytest.approx(0.0, abs=1e-9)
    assert rates.arrival == pytest.approx(0.0, abs=1e-9)


def test_littles_law_when_workers_publish_no_counters() -> None:
    est = RateEstimator(tau_seconds=0.001)
    est.update(0.0, 40, in_flight=8, service_time=2.0)
    rates = est.update(1.0, 40, in_flight=8, service_time=2.0)
    assert rates.completion == pytest.approx(4.0, rel=1e-3)  # 8 busy / 2 s each
    assert rates.arrival == pytest.approx(4.0, rel=1e-3)    # steady backlog


def test_no_arrival_guess_until_completions_are_measured() -> None:
    """A controller starting on a steady load: flat backlog, counters read only once yet."""
    est = RateEstimator(tau_seconds=10.0)
    est.update(0.0, 2, completed={"a": 100})
    for t in (1.0, 2.0, 3.0, 4.0):             # flat backlog is not "no arrivals"
        assert est.update(t, 2).arrival is None
    rates = est.update(5.0, 2, completed={"a": 125})
    assert rates.completion == pytest.approx(5.0) and rates.arrival == pytest.approx(5.0)


def test_without_worker_reports_arrivals_are_backlog_growth() -> None:
    est = RateEstimator(tau_seconds=0.001)
    est.update(0.0, 0)
    assert est.update(1.0, 10).arrival == pytest.approx(10.0, rel=1e-3)


def test_draining_queue_has_no_negative_arrivals() -> None:
    est = RateEstimator(tau_seconds=0.001)
    est.update(0.0, 100)
    rates = est.update(1.0, 10)
    assert rates.arrival == 0.0


def test_smoothing_damps_a_single_spike() -> None:
    est = RateEstimator(tau_seconds=10.0)
    est.update(0.0, 0, completed={"a": 0})
    est.update(1.0, 0, completed={"a": 1})
    rates = est.update(2.0, 100, completed={"a": 2})  # one tick with +100 backlog
    assert rates.arrival is not None and 1.0 < rates.arrival < 20.0


def _pod(name: str, busy: int | None, created: float, phase: str = "Running") -> PodState:
    state = None if busy is None else {"busy": busy, "in_flight": busy}
    return PodState(name=name, ip="10.0.0.1", phase=phase, created=created,
                    terminating=False, state=state)


def test_idle_pods_go_first_then_least_busy_youngest_first() -> None:
    pods = [_pod("busy3", 3, 1.0), _pod("idle-old", 0, 1.0), _pod("busy1", 1, 2.0),
            _pod("idle-young", 0, 5.0), _pod("silent", None, 9.0), _pod("pending", None, 9.5,
                                                                        phase="Pending")]
    order = [p.name for p in rank_for_removal(pods)]
    assert order == ["pending", "idle-young", "idle-old", "busy1", "busy3", "silent"]
    costs = deletion_costs(pods)
    assert max(costs[n] for n in ("pending", "idle-young", "idle-old")) < 1000
    assert min(costs[n] for n in ("busy1", "busy3", "silent")) >= 1_000_000
    assert costs["busy1"] < costs["busy3"] < costs["silent"]


@pytest.mark.parametrize(("doc", "expected"), [
    ({"service_time_seconds": 1.5}, 1.5),
    ({"service_time": {"overall": 0.25, "per_task": {"x": 1}}}, 0.25),
    ({"service_time_ewma": 0}, None),
    ({}, None),
])
def test_service_time_spellings(doc: dict[str, object], expected: float | None) -> None:
    assert service_time_of(doc) == expected
