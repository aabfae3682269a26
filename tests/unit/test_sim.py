"""controller.sim: model sanity, KEDA emulation rules, qscale never interrupts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from controller.sim.__main__ import main
from controller.sim.keda import KEDA_DEFAULT, KEDA_TUNED, KedaConfig, KedaScaler
from controller.sim.model import ClusterView, Order, Removal, SimResult, simulate
from controller.sim.qscale import QscaleScaler
from controller.sim.traces import QUIET_TAIL_SECONDS, TRACES, Trace, make_trace

SEED = 3


def view(now: float, replicas: int, ready: int = 0, in_flight: int = 0) -> ClusterView:
    return ClusterView(now=now, ready=ready, in_flight=in_flight, replicas=replicas,
                       busy_pods=0, arrival_rate=0.0, completion_rate=0.0, service_time=None)


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, str], SimResult]:
    """Every trace against every scaler, once for the module (about 2 s)."""
    out = {}
    for name in TRACES:
        trace = make_trace(name, SEED)
        for scaler in (KedaScaler(KEDA_DEFAULT, "keda-default"),
                       KedaScaler(KEDA_TUNED, "keda-tuned"), QscaleScaler()):
            out[name, scaler.name] = simulate(trace, scaler, seed=SEED)
    return out


# -- traces ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TRACES))
def test_traces_are_well_formed_and_seeded(name: str) -> None:
    trace = make_trace(name, SEED)
    assert len(trace.arrivals) > 500
    assert np.all(np.diff(trace.arrivals) >= 0) and np.all(trace.service_times > 0)
    assert trace.arrivals[-1] < trace.duration - QUIET_TAIL_SECONDS  # a quiet tail
    again = make_trace(name, SEED)
    assert np.array_equal(trace.arrivals, again.arrivals)
    assert not np.array_equal(trace.service_times[:50], make_trace(name, SEED + 1)
                              .service_times[:50])


def test_unknown_trace_is_named() -> None:
    with pytest.raises(ValueError, match="unknown trace 'nope'"):
        make_trace("nope", 1)


# -- model sanity ----------------------------------------------------------------

def test_every_task_is_accounted_for(runs: dict[tuple[str, str], SimResult]) -> None:
    for (trace, scaler), r in runs.items():
        where = f"{trace}/{scaler}"
        assert r.arrived == r.completed + r.queued_at_end + r.in_flight_at_end, where
        # every started execution that was not interrupted has exactly one wait
        assert len(r.waits) == r.completed + r.in_flight_at_end, where
        assert np.all(r.waits >= 0), where
        assert r.pod_seconds >= r.work_floor, where  # nobody does the work for free


def test_same_seed_same_result() -> None:
    trace = make_trace("spikes", SEED)
    a = simulate(trace, KedaScaler(KEDA_TUNED, "k"), seed=SEED)
    b = simulate(trace, KedaScaler(KEDA_TUNED, "k"), seed=SEED)
    assert (a.pod_seconds, a.interrupted, a.completed) == (b.pod_seconds, b.interrupted,
                                                           b.completed)
    assert np.array_equal(a.waits, b.waits)


def test_qscale_interrupts_no_task(runs: dict[tuple[str, str], SimResult]) -> None:
    for name in TRACES:
        r = runs[name, "qscale"]
        assert r.interrupted == 0, name
        assert r.completed == r.arrived, name  # and the quiet tail drains everything


def test_keda_does_interrupt_long_tasks(runs: dict[tuple[str, str], SimResult]) -> None:
    """The model can interrupt: arbitrary scale-in kills tasks longer than the grace."""
    assert runs["long_tail", "keda-tuned"].interrupted > 0


@dataclass
class Scripted:
    """A scaler that follows a fixed plan of (from time, replicas, drain)."""

    plan: list[tuple[float, int, int]]
    removal: Removal
    grace_seconds: float
    name: str = "scripted"
    interval: float = 1.0
    seen: list[ClusterView] = field(default_factory=list)

    def decide(self, v: ClusterView) -> Order:
        self.seen.append(v)
        current = [(r, d) for t, r, d in self.plan if t <= v.now][-1]
        return Order(*current)


def _long_tasks() -> Trace:
    """Eight 100 s tasks at t=20 on a pool of two 4-slot pods."""
    return Trace("eight", "eight long tasks", 400.0, np.full(8, 20.0), np.full(8, 100.0))


def test_arbitrary_scale_in_kills_busy_pods_after_grace() -> None:
    scaler = Scripted([(0, 2, 0), (50, 1, 0)], removal="arbitrary", grace_seconds=10.0)
    r = simulate(_long_tasks(), scaler)
    assert r.interrupted == 4  # one full pod killed at t=60, its tasks requeued
    assert r.completed == 8  # ...and re-run on the survivor after the first four
    assert r.wait_percentile(100) == pytest.approx(100.0)  # 20 -> 120


def test_idle_first_scale_in_drains_instead() -> None:
    scaler = Scripted([(0, 2, 0), (50, 1, 0)], removal="idle-first",
                      grace_seconds=float("inf"))
    r = simulate(_long_tasks(), scaler)
    assert (r.interrupted, r.completed) == (0, 8)
    assert r.wait_percentile(100) == 0.0


def _busy_at_27(drain: int) -> int:
    # Both t=20 tasks land on pod 0 (its slots were free first); the short one ends
    # at t=25, just as the third task arrives.
    trace = Trace("three", "", 400.0, np.array([20.0, 20.0, 25.0]),
                  np.array([100.0, 5.0, 5.0]))
    scaler = Scripted([(0, 2, 0), (21, 2, drain)], removal="idle-first",
                      grace_seconds=float("inf"))
    simulate(trace, scaler)
    return next(v.busy_pods for v in scaler.seen if v.now == 27.0)


def test_view_reports_starting_pods_and_the_start_up_time() -> None:
    """The policy's start-up-aware sizing sees what a controller reads from pods."""
    scaler = Scripted([(0, 2, 0)], removal="idle-first", grace_seconds=float("inf"))
    simulate(_long_tasks(), scaler)
    by_time = {v.now: v for v in scaler.seen}
    assert (by_time[1.0].replicas, by_time[1.0].starting_pods) == (2, 2)
    assert by_time[10.0].starting_pods == 0  # consuming from t=10 (SimConfig default)
    assert by_time[1.0].pod_startup_seconds == 10.0


def test_drained_pod_takes_no_new_work() -> None:
    assert _busy_at_27(drain=0) == 1  # pod 0 takes the t=25 task itself
    assert _busy_at_27(drain=1) == 2  # pod 0 is draining: the task goes to pod 1


# -- KEDA emulation --------------------------------------------------------------

def test_keda_parameters_mirror_the_defaults() -> None:
    d = KEDA_DEFAULT
    assert (d.polling_interval, d.cooldown_period, d.hpa_sync_period) == (30, 300, 15)
    assert (d.scale_down_stabilization, d.hpa_tolerance) == (300, 0.1)
    assert (d.scale_up_percent, d.scale_up_pods, d.termination_grace_seconds) == (100, 4, 30)
    t = KEDA_TUNED
    assert (t.polling_interval, t.scale_down_stabilization, t.cooldown_period) == (5, 30, 60)


def test_hpa_scale_up_is_limited_to_double_or_plus_four() -> None:
    keda, replicas, steps = KedaScaler(KedaConfig(max_replica_count=100)), 1, []
    for now in range(15, 121, 15):
        replicas = keda.decide(view(float(now), replicas, ready=10_000)).replicas
        steps.append(replicas)
    assert steps == [5, 10, 20, 40, 80, 100, 100, 100]


def test_hpa_tolerance_band() -> None:
    keda = KedaScaler()
    assert keda.decide(view(15.0, 10, ready=43)).replicas == 10  # 43/40: within 10%
    assert keda.decide(view(30.0, 10, ready=48)).replicas == 12


def test_hpa_scale_down_waits_for_the_stabilization_window() -> None:
    keda = KedaScaler()
    assert keda.decide(view(15.0, 1, ready=80)).replicas == 5
    keda.decide(view(30.0, 5, ready=80))  # recommends 20, limited to 10
    out = {now: keda.decide(view(float(now), 10, ready=4)).replicas
           for now in range(45, 346, 15)}
    assert all(out[n] == 10 for n in range(45, 330, 15))  # 20 (t=30) still in window
    assert out[330] == 1 and out[345] == 1


def test_keda_ignores_in_flight_and_scales_busy_pools_to_zero() -> None:
    keda = KedaScaler(KEDA_TUNED)
    replicas = 4
    for now in range(5, 200, 5):
        replicas = keda.decide(view(float(now), replicas, ready=0, in_flight=16)).replicas
    assert replicas == 0  # a pool busy with 16 claimed tasks looks idle to LLEN


def test_activation_happens_only_on_polls() -> None:
    keda = KedaScaler()  # 30 s polling; ticks every 15 s
    assert keda.decide(view(15.0, 0, ready=3)).replicas == 0  # HPA does not act at 0
    assert keda.decide(view(30.0, 0, ready=3)).replicas == 1


def test_keda_cooldown_before_zero() -> None:
    keda = KedaScaler()
    keda.decide(view(30.0, 1, ready=3))  # last active at 30
    assert keda.decide(view(300.0, 1)).replicas == 1
    assert keda.decide(view(330.0, 1)).replicas == 0


# -- CLI -------------------------------------------------------------------------

def test_cli_rejects_unknown_traces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--traces", "burst,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_writes_results_and_plots(tmp_path: Path) -> None:
    assert main(["--traces", "long_tail", "--seed", "2", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "### long_tail" in text and "qscale-queue" in text and "keda-tuned" in text
    assert (tmp_path / "long_tail.png").stat().st_size > 10_000
