"""From a run's records to the numbers compared: the same code for every scaler.

* pod-seconds: each pod from creation to gone (deleted from the API), start-up and
  draining included; a pod still there at the end of the run is charged to the end.
* wait per task: publish returned -> start of the execution that finished (a task that
  was interrupted and re-run keeps its whole wait); p50/p95/p99 over finished tasks.
* interrupted: executions that started and never finished (their pod went away); a
  task with more than one start was redelivered.
* burst -> first task on a new pod: for each burst mark of the trace, from the first
  publish at or after it to the first start on a pod created after it (none if the
  scaler served the burst with pods it already had).
* burst breakdown (burst-to-capacity): for the first new pod that ran a task after a
  burst, the time from the burst's first publish to each stage: the scale decision
  (spec.replicas raised), pod created, scheduled, its worker process started (the
  supervisor's start, from /proc), ready to claim (its children forked) and the first task
  started on it.
* scale events: changes of the Deployment's spec.replicas; reversals: a change opposite
  to the previous one.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bench.keda.recorder import PodRecord
from controller.sim.traces import Trace


@dataclass
class ScalerResult:
    trace: str
    broker: str
    scaler: str
    describe: str
    published: int
    finished: int
    pod_seconds: float
    work_floor: float
    wait_p50: float
    wait_p95: float
    wait_p99: float
    wait_max: float
    interrupted: int
    redelivered: int
    duplicates: int
    unfinished: int
    burst_to_new_pod: list[float | None]
    burst_breakdown: list[dict[str, float] | None]
    scale_events: int
    reversals: int
    max_pods: int
    pods_created: int
    pod_start_median: float | None     # creation -> Ready, median
    startup_to_claim: float | None = None  # creation -> ready to claim (all pools of the run)
    timeline: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_events(raw: Sequence[bytes]) -> list[dict[str, Any]]:
    return [json.loads(r) for r in raw]


def _executions(events: list[dict[str, Any]]) -> tuple[dict[str, list[tuple[float, str]]],
                                                        dict[str, list[tuple[float, float, str]]]]:
    """Starts per id, and finished executions per id (start, finish, pod)."""
    starts: dict[str, list[tuple[float, str]]] = defaultdict(list)
    open_runs: dict[tuple[str, str], list[float]] = defaultdict(list)
    done: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for e in sorted(events, key=lambda e: (e["t"], e["e"] != "start")):
        key = (e["id"], e["pod"])
        if e["e"] == "start":
            starts[e["id"]].append((e["t"], e["pod"]))
            open_runs[key].append(e["t"])
        elif open_runs[key]:
            done[e["id"]].append((open_runs[key].pop(0), e["t"], e["pod"]))
    return starts, done


def _first_on_new_pod(b: float, pods: Sequence[PodRecord],
                      events: list[dict[str, Any]]) -> tuple[float, dict[str, Any]] | None:
    new = {p.name for p in pods if p.created >= b - 0.05}
    firsts = [e for e in events if e["e"] == "start" and e["pod"] in new and e["t"] >= b]
    if not firsts:
        return None
    e = min(firsts, key=lambda e: e["t"])
    return e["t"], e


def _breakdown(b: float, first: tuple[float, dict[str, Any]], pods: Sequence[PodRecord],
               replicas: list[tuple[float, int]]) -> dict[str, float]:
    t, event = first
    pod = next(p for p in pods if p.name == event["pod"])
    ups = [when for (when, n), (_, before) in zip(replicas[1:], replicas, strict=False)
           if n > before and when >= b - 0.05]
    stages = {"decision": ups[0] if ups else None, "created": pod.created,
              "scheduled": pod.scheduled, "process_started": event.get("supervisor"),
              "ready_to_claim": event.get("child"), "first_task": t}
    return {k: round(v - b, 3) for k, v in stages.items() if v is not None}


def _reversals(series: list[tuple[float, int]]) -> tuple[int, int]:
    events = reversals = last = 0
    for (_, a), (_, b) in itertools.pairwise(series):
        if a == b:
            continue
        direction = 1 if b > a else -1
        events += 1
        reversals += int(direction == -last)
        last = direction
    return events, reversals


def pod_seconds(pods: Sequence[PodRecord], start: float, end: float) -> float:
    return float(sum(min(p.gone if p.gone is not None else end, end) - max(p.created, start)
                     for p in pods if p.created < end))


def _max_pods(pods: Sequence[PodRecord], end: float) -> int:
    marks = sorted([(p.created, 1) for p in pods] +
                   [(p.gone if p.gone is not None else end, -1) for p in pods])
    level = peak = 0
    for _, d in marks:
        level += d
        peak = max(peak, level)
    return peak


def score(trace: Trace, broker: str, scaler: str, describe: str, concurrency: int,
          t0: float, end: float, published: dict[str, tuple[int, float]],
          events: list[dict[str, Any]], pods: Sequence[PodRecord],
          replicas: list[tuple[float, int]],
          depth: list[tuple[float, int, int]]) -> ScalerResult:
    ids = set(published)
    events = [e for e in events if e["id"] in ids]
    starts, done = _executions(events)
    waits = np.array([done[i][0][0] - published[i][1] for i in ids if done.get(i)])
    n_exec_started = sum(len(v) for v in starts.values())
    n_exec_done = sum(len(v) for v in done.values())
    pct = (lambda q: float(np.percentile(waits, q))) if len(waits) else (lambda q: math.nan)
    first_pub = sorted(t for _, t in published.values())
    bursts: list[float | None] = []
    breakdowns: list[dict[str, float] | None] = []
    for mark in trace.bursts:
        after = [t for t in first_pub if t >= t0 + mark - 1e-6]
        b = after[0] if after else None
        first = None if b is None else _first_on_new_pod(b, pods, events)
        bursts.append(None if first is None else first[0] - b)  # type: ignore[operator]
        breakdowns.append(None if first is None or b is None else
                          _breakdown(b, first, pods, replicas))
    ev, rev = _reversals(replicas)
    startups = [p.ready - p.created for p in pods if p.ready is not None and p.created >= t0]
    timeline: dict[str, list[float]] = {
        "t": [s[0] - t0 for s in depth], "ready": [float(s[1]) for s in depth],
        "in_flight": [float(s[2]) for s in depth],
        "replicas_t": [t - t0 for t, _ in replicas], "replicas": [float(r) for _, r in replicas]}
    grid = np.arange(0.0, end - t0, 2.0)
    timeline["pods_t"] = grid.tolist()
    timeline["pods"] = [float(sum(1 for p in pods if p.created <= t0 + g and
                                  (p.gone is None or p.gone > t0 + g))) for g in grid]
    return ScalerResult(
        trace=trace.name, broker=broker, scaler=scaler, describe=describe,
        published=len(ids), finished=sum(1 for i in ids if done.get(i)),
        pod_seconds=pod_seconds(pods, t0 - 3600.0, end),
        work_floor=float(trace.service_times.sum()) / concurrency,
        wait_p50=pct(50), wait_p95=pct(95), wait_p99=pct(99),
        wait_max=float(waits.max()) if len(waits) else math.nan,
        interrupted=n_exec_started - n_exec_done,
        redelivered=sum(1 for v in starts.values() if len(v) > 1),
        duplicates=sum(1 for v in done.values() if len(v) > 1),
        unfinished=sum(1 for i in ids if not done.get(i)),
        burst_to_new_pod=bursts, burst_breakdown=breakdowns, scale_events=ev, reversals=rev,
        max_pods=_max_pods(pods, end), pods_created=sum(1 for p in pods if p.created >= t0),
        pod_start_median=float(np.median(startups)) if startups else None,
        timeline=timeline)


def measured_startup(raw: dict[str, Any]) -> float | None:
    """Pod creation -> ready to claim: the median over new pods of creation -> container
    running, plus the median over pods that ran a task of their supervisor's start ->
    children forked (pods that never ran a task still count for the first part)."""
    ready: dict[str, float] = {}
    for e in raw["events"]:
        if e["e"] == "start" and "child" in e and "supervisor" in e:
            ready[e["pod"]] = e["child"] - e["supervisor"]
    running = [p["running"] - p["created"] for p in raw["pods"].values()
               if p["created"] >= raw["t0"] and p.get("running") is not None]
    if not running:
        return None
    return statistics.median(running) + (statistics.median(ready.values()) if ready else 0.0)
