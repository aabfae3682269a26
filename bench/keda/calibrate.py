"""The simulator against the real cluster: the same traces, the same scaler settings.

`controller.sim` compares qscale's policy with an emulation of KEDA + HPA. This replays
the benchmark's trace file in it with each real run's settings (pool shape, every
scaler's options) and the pod start-up the real run measured (pod creation -> ready to
claim, `metrics.measured_startup`), and prints simulated next to real,
so the simulator's KEDA numbers are calibrated against real KEDA rather than trusted.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from bench.keda.scalers import Scaler, parse_scaler
from controller.policy import PolicyConfig
from controller.sim.keda import KedaConfig, KedaScaler
from controller.sim.model import SimConfig, SimResult, simulate
from controller.sim.qscale import QscaleScaler
from controller.sim.tracefile import load_traces

WORKER_DRAIN_SECONDS = 25.0   # the chart's worker.drainSeconds: a busy pod's tasks die after it


def keda_config(scaler: Scaler, broker: str, concurrency: int, max_replicas: int) -> KedaConfig:
    o = scaler.options
    return KedaConfig(
        polling_interval=float(o.get("poll", 30)), cooldown_period=float(o.get("cooldown", 300)),
        list_length=float(o.get("length", concurrency)), max_replica_count=max_replicas,
        scale_down_stabilization=float(o.get("down_window", 300)),
        scale_up_percent=10000.0 if o.get("up") == "unlimited" else 100.0,
        termination_grace_seconds=WORKER_DRAIN_SECONDS,
        counts_in_flight=broker == "rabbitmq" and o.get("protocol") == "http")


def qscale_policy(scaler: Scaler, max_replicas: int) -> PolicyConfig:
    o = scaler.options
    fields = {"mode": o.get("mode", "latency"), "min_replicas": 0, "max_replicas": max_replicas}
    for key, name in (("target_wait", "target_wait_seconds"), ("batch", "batch_seconds"),
                      ("down_window", "scale_down_window_seconds"),
                      ("cooldown", "cooldown_seconds"), ("target_per_slot", "target_per_slot")):
        if key in o:
            fields[name] = o[key]
    return PolicyConfig(**fields)


def _scaler_from(name: str, describe: str) -> Scaler:
    kind, _, opts = describe.partition("(")
    opts = opts.rstrip(")")
    opts = "" if opts == "defaults" else opts.replace(", ", ",")
    return parse_scaler(f"{name}={kind}:{opts}")


def calibrate(results_dir: Path, trace_file: Path) -> str:
    doc = json.loads((results_dir / "results.json").read_text())
    concurrency, max_replicas = _shape(doc["pool"])
    traces = {t.name: t for t in load_traces(trace_file)}
    lines = ["# The simulator vs the real cluster", "",
             f"Real run: {results_dir / 'results.json'} ({doc['date']}); simulated with "
             "`python -m bench.keda sim` on the same trace file and scaler settings.", "",
             "| trace | broker | scaler | start-up s | pod-s real | pod-s sim | sim/real "
             "| p95 real s | p95 sim s | interrupted real / sim |", "|" + "---|" * 10]
    errors: dict[str, list[float]] = {}
    seen: set[tuple[str, str]] = set()
    for row in doc["results"]:
        key = (row["trace"], row["broker"])
        if row.get("round", 0) or row["trace"] not in traces:
            continue
        startup = row.get("startup_to_claim") or 10.0
        seen.add(key)
        scaler = _scaler_from(row["scaler"], row["describe"])
        config = SimConfig(concurrency=concurrency, startup_seconds=startup)
        if scaler.kind == "keda":
            sim: Any = KedaScaler(keda_config(scaler, row["broker"], concurrency, max_replicas),
                                  scaler.name)
        else:
            sim = QscaleScaler(qscale_policy(scaler, max_replicas), concurrency, scaler.name)
        result: SimResult = simulate(traces[row["trace"]], sim, config, 1)
        ratio = result.pod_seconds / row["pod_seconds"] if row["pod_seconds"] else math.nan
        errors.setdefault(scaler.kind, []).append(ratio)
        lines.append(
            f"| {row['trace']} | {row['broker']} | {row['scaler']} | {startup:.1f} "
            f"| {row['pod_seconds']:,.0f} | {result.pod_seconds:,.0f} | {ratio:.2f} "
            f"| {row['wait_p95']:.1f} | {result.wait_percentile(95):.1f} "
            f"| {row['interrupted']} / {result.interrupted} |")
    lines.append("")
    for kind, ratios in sorted(errors.items()):
        off = [abs(r - 1) for r in ratios if math.isfinite(r)]
        if off:
            lines.append(f"- {kind}: simulated pod-seconds are {min(ratios):.2f}-"
                         f"{max(ratios):.2f}x the real ones (median deviation "
                         f"{statistics.median(off):.0%}).")
    return "\n".join(lines)


def _shape(pool: str) -> tuple[int, int]:
    """(concurrency, max replicas) from the results' pool description."""
    words = pool.split()
    concurrency = int(words[0])
    max_replicas = int(next(w for w in words if "-" in w and w[0].isdigit()).split("-")[1])
    return concurrency, max_replicas
