"""The machine's own ceiling: the CPU-bound task body in a bare multiprocessing pool.

No broker, no framework. Its scaling efficiency tells how much parallelism the
(shared) machine actually offered during the run, the yardstick for qscale's.
"""

from __future__ import annotations

import multiprocessing
import resource
import time

from bench.harness import RunResult
from bench.workload import burn_cpu


def _burn(_: int) -> int:
    return burn_cpu()


def run_bare(tasks: int, processes: int) -> RunResult:
    """Run `tasks` CPU-bound task bodies on `processes` forked processes."""
    context = multiprocessing.get_context("fork")
    cpu_before = _children_cpu()
    started = time.perf_counter()
    with context.Pool(processes) as pool:
        first_at: float | None = None
        for _ in pool.imap_unordered(_burn, range(tasks), chunksize=1):
            if first_at is None:
                first_at = time.perf_counter()
        finished = time.perf_counter()
    wall = finished - started
    cpu = _children_cpu() - cpu_before  # the pool's processes are reaped by now
    steady = (tasks - 1) / (finished - first_at) if first_at and finished > first_at else None
    return RunResult(framework="bare", broker="none", workload="cpu", processes=processes,
                     threads=1, tasks=tasks, ok=True, wall_s=wall, tasks_per_s=tasks / wall,
                     steady_tasks_per_s=steady,
                     first_completion_s=(first_at - started) if first_at else None,
                     completed=tasks, worker_cpu_s=cpu, cpu_us_per_task=cpu / tasks * 1e6)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
