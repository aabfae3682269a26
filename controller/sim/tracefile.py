"""A trace set in a file: the workloads the simulator and the real-cluster benchmark replay.

YAML (or JSON), one entry per trace; every random draw is seeded from the file's
`seed`, the trace's position and the segment's, so a file is one exact workload:

    seed: 1
    traces:
      - name: burst
        description: two bursts of 240 tasks over a trickle
        active: 480             # seconds in which tasks arrive
        tail: 360               # quiet seconds after, so every scaler can scale in
        service: {mean: 3.0, sigma: 0.6}        # lognormal; or {fixed: 2.0}; max: caps it
        arrivals:
          - poisson: {rate: 0.05}               # start/end default to 0/active
          - burst: {at: 20, count: 240, over: 3}
          - cosine: {low: 0.1, high: 10, start: 0, end: 600}
          - poisson: {rate: 8, start: 60, end: 100, burst: true, service: {fixed: 1}}
          - tasks: [[0.5, 2.0], [1.0, 30.0]]    # explicit (arrival, service) pairs

A `burst` segment, and a `poisson` one with `burst: true`, mark their start as a burst
(where burst-to-capacity is measured). Problems raise TraceFileError naming the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from controller.sim.traces import FloatArray, Trace


class TraceFileError(ValueError):
    """The trace file cannot be used; the message names the field."""


def _num(node: dict[str, Any], key: str, where: str, default: float | None = None,
         low: float = 0.0) -> float:
    value = node.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TraceFileError(f"{where}.{key}: a finite number is needed, got {value!r}")
    if value < low:
        raise TraceFileError(f"{where}.{key}: must be >= {low:g}, got {value!r}")
    return float(value)


def _service(spec: Any, where: str, rng: np.random.Generator, n: int) -> FloatArray:
    if not isinstance(spec, dict):
        raise TraceFileError(f"{where}: a mapping like {{mean: 2, sigma: 0.6}} is needed")
    if "fixed" in spec:
        out = np.full(n, _num(spec, "fixed", where))
    else:
        mean, sigma = _num(spec, "mean", where, low=1e-3), _num(spec, "sigma", where, 0.0)
        out = rng.lognormal(math.log(mean) - sigma**2 / 2, sigma, n)
    if "max" in spec:
        out = np.minimum(out, _num(spec, "max", where, low=1e-3))
    return np.asarray(out, dtype=np.float64)


def _segment(seg: Any, where: str, active: float, default_service: Any,
             rng: np.random.Generator) -> tuple[FloatArray, FloatArray, list[float]]:
    if not isinstance(seg, dict) or len(seg) != 1:
        raise TraceFileError(f"{where}: one of poisson, burst, cosine, tasks is needed")
    (kind, body), = seg.items()
    if kind == "tasks":
        pairs = np.asarray(body, dtype=np.float64)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.all(np.isfinite(pairs)) \
                or np.any(pairs < 0):
            raise TraceFileError(f"{where}.tasks: a list of [arrival, service] pairs >= 0")
        return pairs[:, 0], pairs[:, 1], []
    if not isinstance(body, dict):
        raise TraceFileError(f"{where}.{kind}: a mapping is needed")
    service = body.get("service", default_service)
    marks: list[float] = []
    if kind == "burst":
        at, count = _num(body, "at", where), int(_num(body, "count", where, low=1))
        times = np.sort(at + rng.uniform(0.0, _num(body, "over", where, 0.0), count))
        marks.append(at)
    elif kind in ("poisson", "cosine"):
        start, end = _num(body, "start", where, 0.0), _num(body, "end", where, active)
        if end <= start:
            raise TraceFileError(f"{where}.{kind}: end must be after start")
        if kind == "poisson":
            peak = _num(body, "rate", where)

            def rate(t: FloatArray) -> FloatArray:
                return np.full_like(t, peak)
        else:
            low, peak = _num(body, "low", where), _num(body, "high", where)
            span = end - start

            def rate(t: FloatArray) -> FloatArray:
                return low + (peak - low) * (1 - np.cos(2 * np.pi * (t - start) / span)) / 2
        count = rng.poisson(peak * (end - start))
        times = np.sort(rng.uniform(start, end, count))
        times = times[rng.uniform(0.0, peak, count) < rate(times)]  # thinning
        if body.get("burst", False) is True:
            marks.append(start)
    else:
        raise TraceFileError(f"{where}: unknown segment {kind!r} "
                             "(poisson, burst, cosine, tasks)")
    return times, _service(service, f"{where}.service", rng, len(times)), marks


def _trace(entry: Any, index: int, seed: int) -> Trace:
    where = f"traces[{index}]"
    if not isinstance(entry, dict):
        raise TraceFileError(f"{where}: a mapping is needed")
    name = entry.get("name")
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise TraceFileError(f"{where}.name: letters, digits, - and _ are needed, got {name!r}")
    where = f"traces[{name}]"
    active, tail = _num(entry, "active", where, low=1.0), _num(entry, "tail", where, 0.0)
    segments = entry.get("arrivals")
    if not isinstance(segments, list) or not segments:
        raise TraceFileError(f"{where}.arrivals: a non-empty list is needed")
    arrivals, services, marks = [], [], []
    for k, seg in enumerate(segments):
        rng = np.random.default_rng([seed, index, k])
        a, s, m = _segment(seg, f"{where}.arrivals[{k}]", active, entry.get("service"), rng)
        arrivals.append(a)
        services.append(s)
        marks += m
    times, service = np.concatenate(arrivals), np.concatenate(services)
    if len(times) == 0:
        raise TraceFileError(f"{where}: no task arrives")
    if times.max() > active:
        raise TraceFileError(f"{where}: a task arrives at {times.max():.1f} s, after "
                             f"active ({active:g} s)")
    order = np.argsort(times, kind="stable")
    return Trace(name, str(entry.get("description", name)), active + tail,
                 times[order], service[order], tuple(sorted(marks)))


def parse_traces(doc: Any) -> list[Trace]:
    """Traces from a parsed document (see the module docstring)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("traces"), list):
        raise TraceFileError("traces: a list of traces is needed")
    seed = doc.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TraceFileError(f"seed: a non-negative integer is needed, got {seed!r}")
    traces = [_trace(entry, i, seed) for i, entry in enumerate(doc["traces"])]
    names = [t.name for t in traces]
    if len(set(names)) != len(names):
        raise TraceFileError(f"traces: names must be unique, got {names}")
    return traces


def load_traces(path: Path) -> list[Trace]:
    """Read a trace file (YAML, or JSON by its .json suffix)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise TraceFileError(f"{path}: {exc.strerror or exc}") from None
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise TraceFileError(f"{path}: not JSON: {exc}") from None
    else:
        import yaml  # type: ignore[import-untyped]
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TraceFileError(f"{path}: not YAML: {exc}") from None
    return parse_traces(doc)
