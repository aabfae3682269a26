"""One benchmark run: every trace, every scaler side by side, on the real cluster.

Per broker, one Helm release holds one pool per scaler. Per trace: every pool at zero
pods and KEDA's ScaledObjects re-created (fresh HPAs), the recorders started, the trace
replayed into every pool's queue at once, then the run waits until every task finished
and every pool is back at zero pods (or `max_extra` seconds past the trace's end). The
raw records go to one JSON file per (trace, broker), the scores to the report.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.keda.metrics import ScalerResult, measured_startup, parse_events, score
from bench.keda.recorder import ClusterRecorder, DepthSampler
from bench.keda.release import Release
from bench.keda.replay import replay
from controller.sim.traces import Trace

log = logging.getLogger("bench.keda")


@dataclass
class TraceRun:
    trace: str
    broker: str
    t0: float
    end: float
    results: list[ScalerResult]
    raw: dict[str, Any]


def _finished_ids(results_url: str, run: str) -> set[str]:
    client = redis.Redis.from_url(results_url, socket_timeout=30)
    try:
        raw = client.lrange(f"bench:{run}:events", 0, -1)
    finally:
        client.close()
    return {e["id"] for e in parse_events(raw) if e["e"] == "finish"}


def run_trace(release: Release, trace: Trace, api: Any, *, max_extra: float,
              out_dir: Path, speed: float = 1.0) -> TraceRun:
    scalers = release.scalers
    queues = [s.name for s in scalers]
    release.reset()
    release.start_keda()
    recorder = ClusterRecorder(api, release.ns)
    recorder.start()
    sampler = DepthSampler(release.broker_url, release.management_url, queues)
    sampler.start()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    run = f"{trace.name}-{release.broker}-{stamp}"
    log.info("trace %s on %s: %d tasks x %d queues, %.0f s + tail (run %s)", trace.name,
             release.broker, len(trace.arrivals), len(queues), trace.duration, run)
    published = replay(trace, release.broker_url, queues, run, speed)
    t0 = published.t0
    if published.late > 1.0:
        log.warning("the producer fell %.1f s behind the trace's clock", published.late)
    all_ids = {i for q in queues for i in published.tasks[q]}
    hard_end = t0 + trace.duration / speed + max_extra
    while True:
        now = time.time()
        done = _finished_ids(release.results_url, run) >= all_ids
        idle = all(recorder.live_pods(q) == 0 for q in queues)
        if now >= t0 + trace.duration / speed and done and idle:
            break
        if now >= hard_end:
            log.warning("trace %s: stopped at the cap (%d tasks unfinished, pods left: %s)",
                        trace.name, len(all_ids - _finished_ids(release.results_url, run)),
                        {q: recorder.live_pods(q) for q in queues})
            break
        time.sleep(5)
    end = time.time()
    recorder.stop()
    sampler.stop()
    client = redis.Redis.from_url(release.results_url, socket_timeout=30)
    events = parse_events(client.lrange(f"bench:{run}:events", 0, -1))
    client.delete(f"bench:{run}:events")
    client.close()
    results = []
    for s in scalers:
        pods = [p for p in recorder.pods.values() if p.pool == s.name]
        results.append(score(trace, release.broker, s.name, s.describe(),
                             release.shape.concurrency, t0, end, published.tasks[s.name],
                             events, pods, recorder.replicas.get(s.name, []),
                             sampler.samples[s.name]))
    raw = {"trace": trace.name, "broker": release.broker, "run": run, "t0": t0, "end": end,
           "speed": speed, "producer_late": published.late,
           "scalers": {s.name: s.describe() for s in scalers},
           "published": published.tasks, "events": events,
           "pods": {n: vars(p) for n, p in recorder.pods.items()},
           "replicas": recorder.replicas, "depth": sampler.samples}
    startup = measured_startup(raw)
    for r in results:
        r.startup_to_claim = startup
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"raw-{trace.name}-{release.broker}.json").write_text(json.dumps(raw))
    return TraceRun(trace.name, release.broker, t0, end, results, raw)


class LoadMonitor(threading.Thread):
    """The host's 1-minute load average every 10 s: what the numbers are relative to."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="load")
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            with open("/proc/loadavg") as f:
                self.samples.append((time.time(), float(f.read().split()[0])))
            if self.stopped.wait(10):
                return

    def summary(self) -> dict[str, float]:
        loads = sorted(v for _, v in self.samples) or [float("nan")]
        return {"min": loads[0], "median": loads[len(loads) // 2], "max": loads[-1]}


def run_all(releases: Sequence[Release], traces: Sequence[Trace], api: Any, *,
            max_extra: float, out_dir: Path, speed: float = 1.0) -> list[TraceRun]:
    runs = []
    for release in releases:
        for trace in traces:
            runs.append(run_trace(release, trace, api, max_extra=max_extra, out_dir=out_dir,
                                  speed=speed))
    return runs
