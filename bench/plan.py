"""What one benchmark invocation runs, and how repeated runs fold into medians."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from bench.frameworks import FRAMEWORKS
from bench.harness import RunResult


@dataclass(frozen=True)
class Case:
    """One measurement to take: a framework on a broker with a workload and a pool shape."""

    framework: str
    broker: str
    workload: str
    processes: int
    threads: int
    tasks: int

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return (self.framework, self.broker, self.workload, self.processes, self.threads)


@dataclass(frozen=True)
class PlanOptions:
    brokers: tuple[str, ...]
    frameworks: tuple[str, ...]
    workloads: tuple[str, ...]
    processes: int
    noop_tasks: int
    cpu_tasks: int
    rq_max_tasks: int


def build_cases(options: PlanOptions) -> list[Case]:
    """Every framework on every broker it supports, with the same process count.

    No-op: Dramatiq once per thread count it offers (the best is reported).
    CPU-bound: one thread per process everywhere (pure Python cannot use more under
    the GIL), and qscale also with one process, for its scaling efficiency.
    """
    cases: list[Case] = []
    p = options.processes
    for workload in options.workloads:
        count = options.noop_tasks if workload == "noop" else options.cpu_tasks
        for broker in options.brokers:
            for name in options.frameworks:
                framework = FRAMEWORKS[name]
                if broker not in framework.brokers:
                    continue
                tasks = min(count, options.rq_max_tasks) if name == "rq" else count
                threads = framework.thread_options if workload == "noop" else (1,)
                cases.extend(Case(name, broker, workload, p, t, tasks) for t in threads)
                if workload == "cpu" and name == "qscale":
                    # One process for the efficiency, then the bare pool right after,
                    # so all three see about the same load on the shared machine.
                    shapes = sorted({1, p})
                    if p > 1:
                        cases.append(Case(name, broker, workload, 1, 1, tasks))
                    cases.extend(Case("bare", "none", workload, n, 1, tasks) for n in shapes)
    return cases


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[RunResult], processes: int) -> dict[str, Any]:
    """Medians per case, the best Dramatiq thread count, ratios and CPU efficiency."""
    grouped: dict[tuple[str, str, str, int, int], list[RunResult]] = defaultdict(list)
    for run in runs:
        grouped[(run.framework, run.broker, run.workload, run.processes, run.threads)].append(run)
    medians: dict[tuple[str, str, str, int, int], dict[str, Any]] = {}
    for key, group in grouped.items():
        ok = [r for r in group if r.ok and r.tasks_per_s]
        medians[key] = {
            "tps": _median([r.tasks_per_s for r in ok if r.tasks_per_s]),
            "steady_tps": _median([r.steady_tasks_per_s for r in ok if r.steady_tasks_per_s]),
            "cpu_us_per_task": _median([r.cpu_us_per_task for r in ok if r.cpu_us_per_task]),
            "first_completion_s": _median([r.first_completion_s for r in ok
                                           if r.first_completion_s]),
            "runs": len(group), "ok_runs": len(ok),
        }
    table: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (fw, broker, workload, procs, threads), stats in medians.items():
        if procs != processes or fw == "bare":
            continue
        cell = table[f"{broker}/{workload}"]
        current = cell.get(fw)
        if current is None or (stats["tps"] or 0.0) > (current["tps"] or 0.0):
            cell[fw] = {**stats, "threads": threads}
    ratios: dict[str, dict[str, float | None]] = {}
    for label, by_fw in table.items():
        ours = by_fw.get("qscale", {}).get("tps")
        ratios[label] = {peer: (ours / peer_stats["tps"] if ours and peer_stats["tps"] else None)
                         for peer, peer_stats in by_fw.items() if peer != "qscale"}
    cases = [{"framework": fw, "broker": broker, "workload": workload, "processes": procs,
              "threads": threads, **stats}
             for (fw, broker, workload, procs, threads), stats in sorted(medians.items())]
    return {"table": dict(table), "ratios": ratios,
            "efficiency": _efficiency(medians, processes), "cases": cases}


def _efficiency(medians: dict[tuple[str, str, str, int, int], dict[str, Any]],
                processes: int) -> dict[str, dict[str, float | None]]:
    """tps(P) / (P x tps(1)) for qscale per broker and for the bare pool.

    The bare pool's efficiency is what the shared machine allowed during the run;
    `vs_bare` divides it out, and `cpu_vs_bare` compares CPU spent per task.
    """
    out: dict[str, dict[str, float | None]] = {}
    bare_many = medians.get(("bare", "none", "cpu", processes, 1))
    for (fw, broker, workload, procs, _), stats in medians.items():
        if workload != "cpu" or procs != 1 or processes == 1:
            continue
        many = medians.get((fw, broker, workload, processes, 1))
        if not many:
            continue
        out[f"{fw}/{broker}"] = {
            "wall": _ratio(many["tps"], stats["tps"], processes),
            "steady": _ratio(many["steady_tps"], stats["steady_tps"], processes),
        }
    bare = out.get("bare/none")
    for label, eff in out.items():
        if label == "bare/none" or bare is None:
            continue
        eff["steady_vs_bare"] = _share(eff["steady"], bare["steady"])
        eff["wall_vs_bare"] = _share(eff["wall"], bare["wall"])
        broker = label.split("/")[1]
        ours = medians.get(("qscale", broker, "cpu", processes, 1))
        if ours and bare_many:
            eff["cpu_per_task_vs_bare"] = _share(ours["cpu_us_per_task"],
                                                 bare_many["cpu_us_per_task"])
    return out


def _share(part: float | None, whole: float | None) -> float | None:
    return part / whole if part and whole else None


def _ratio(many: float | None, one: float | None, processes: int) -> float | None:
    return many / (processes * one) if many and one else None
