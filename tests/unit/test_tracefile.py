"""Trace files (controller/sim/tracefile.py): one file is one exact workload, and a bad one
is refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.sim.__main__ import main as sim_main
from controller.sim.tracefile import TraceFileError, load_traces, parse_traces

REPO = Path(__file__).resolve().parents[2]
BENCH_TRACES = REPO / "bench" / "keda" / "traces.yaml"
SMOKE_TRACES = REPO / "bench" / "keda" / "smoke-traces.yaml"


def doc(*arrivals: Any, **extra: Any) -> dict[str, Any]:
    trace = {"name": "t", "active": 100, "tail": 10, "service": {"mean": 2.0, "sigma": 0.5},
             "arrivals": list(arrivals), **extra}
    return {"seed": 3, "traces": [trace]}


def test_the_benchmark_traces_load_and_are_what_they_say() -> None:
    traces = {t.name: t for t in load_traces(BENCH_TRACES)}
    assert list(traces) == ["burst", "spikes", "diurnal", "long_tail"]
    for t in traces.values():
        assert np.all(np.diff(t.arrivals) >= 0) and np.all(t.service_times > 0)
        assert t.duration - t.arrivals[-1] >= 360  # a quiet tail KEDA's defaults can use
    assert traces["burst"].bursts == (20.0, 260.0)
    assert traces["spikes"].bursts == (60.0, 230.0, 400.0)
    assert traces["diurnal"].bursts == ()
    long = traces["long_tail"].service_times
    assert np.mean(long < 5) > 0.9 and long.max() > 100   # mostly short, some very long
    assert len(load_traces(SMOKE_TRACES)) == 1


def test_a_file_is_one_exact_workload() -> None:
    a, b = parse_traces(doc({"poisson": {"rate": 2}}))[0], parse_traces(doc({"poisson":
                                                                              {"rate": 2}}))[0]
    assert np.array_equal(a.arrivals, b.arrivals)
    assert np.array_equal(a.service_times, b.service_times)
    other = parse_traces({**doc({"poisson": {"rate": 2}}), "seed": 4})[0]
    assert not np.array_equal(a.arrivals[:20], other.arrivals[:20])


def test_adding_a_segment_does_not_move_the_others() -> None:
    one = parse_traces(doc({"poisson": {"rate": 1}}))[0]
    two = parse_traces(doc({"poisson": {"rate": 1}}, {"burst": {"at": 50, "count": 10}}))[0]
    assert set(one.arrivals) <= set(two.arrivals)
    assert two.bursts == (50.0,)


def test_segments() -> None:
    trace = parse_traces(doc(
        {"burst": {"at": 10, "count": 30, "over": 2, "service": {"fixed": 1.5}}},
        {"cosine": {"low": 0.0, "high": 4.0, "start": 20, "end": 80}},
        {"poisson": {"rate": 3, "start": 85, "end": 95, "burst": True,
                     "service": {"mean": 60, "sigma": 1, "max": 90}}},
        {"tasks": [[99.0, 7.0]]}))[0]
    burst = (trace.arrivals >= 10) & (trace.arrivals <= 12)
    assert burst.sum() == 30 and np.all(trace.service_times[burst] == 1.5)
    cos = trace.arrivals[(trace.arrivals >= 20) & (trace.arrivals < 80)]
    middle = ((cos > 40) & (cos < 60)).sum()
    assert middle > 2 * ((cos < 30) | (cos > 70)).sum()      # the peak is in the middle
    assert np.all(trace.service_times[(trace.arrivals >= 85) & (trace.arrivals < 95)] <= 90)
    assert trace.arrivals[-1] == 99.0 and trace.service_times[-1] == 7.0
    assert trace.bursts == (10.0, 85.0)
    assert trace.duration == 110.0


@pytest.mark.parametrize(("bad", "message"), [
    ({"traces": "x"}, r"^traces: a list"),
    ({**doc({"poisson": {"rate": 1}}), "seed": -1}, r"^seed: "),
    (doc({"poisson": {"rate": "fast"}}), r"arrivals\[0\]\.rate: a finite number"),
    (doc({"poisson": {"rate": 1, "start": 50, "end": 40}}), r"end must be after start"),
    (doc({"wave": {"rate": 1}}), r"unknown segment 'wave'"),
    (doc({"burst": {"at": 150, "count": 3}}), r"arrives at 150\.\d s, after active"),
    (doc({"poisson": {"rate": 1, "service": {"mean": 0}}}), r"service\.mean: must be >="),
    (doc({"tasks": [[1, -2]]}), r"tasks: a list of \[arrival, service\] pairs"),
    (doc(), r"arrivals: a non-empty list"),
    ({"traces": [{"name": "a b", "active": 1, "arrivals": []}]}, r"traces\[0\]\.name"),
])
def test_bad_files_name_the_field(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(TraceFileError, match=message):
        parse_traces(bad)


def test_the_simulator_replays_a_trace_file(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc({"burst": {"at": 5, "count": 40, "over": 1}})))
    assert sim_main(["--trace-file", str(path), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "keda-default" in text and "qscale-latency" in text
    assert (tmp_path / "out" / "t.png").exists()
    path.write_text("{}")
    assert sim_main(["--trace-file", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "traces: a list" in capsys.readouterr().err
