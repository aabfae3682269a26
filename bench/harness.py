"""Runs one framework on one broker for one workload and measures it.

Wall time runs from starting the worker command until every task has executed
and, on Redis, the framework's own keys show nothing ready or unacked. Nothing is
subtracted: the worker's start-up is part of the time. Every run is bounded by a
timeout, and its worker's whole process group is stopped afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.completions import CompletionCounter
from bench.cpu import group_cpu_seconds
from bench.frameworks import Framework
from bench.workload import BROKER_URL_ENV, COMPLETION_FILE_ENV, QUEUE_ENV

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = Path(tempfile.gettempdir()) / "qscale-bench-logs"
POLL_SECONDS = 0.01
STOP_GRACE_SECONDS = 20.0
RABBIT_SETTLE_SECONDS = 1.0


@dataclass
class RunResult:
    """One measured run. `tasks_per_s` is None when the run did not complete."""

    framework: str
    broker: str
    workload: str
    processes: int
    threads: int
    tasks: int
    ok: bool
    wall_s: float | None = None
    tasks_per_s: float | None = None
    steady_tasks_per_s: float | None = None  # first to last completion: start-up excluded
    first_completion_s: float | None = None
    worker_cpu_s: float | None = None  # CPU of the worker's process group until drained
    cpu_us_per_task: float | None = None  # steady state: start-up CPU excluded
    completed: int = 0
    duplicates: int = 0
    left_on_broker: int | None = None
    error: str = ""
    log_file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _wait_loaded(framework: Framework, queue: str, count: int, timeout: float = 30.0) -> int:
    """Wait until the broker shows every pre-loaded message (publishes may lag)."""
    deadline = time.monotonic() + timeout
    seen = framework.unfinished(queue)
    while seen < count and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = framework.unfinished(queue)
    return seen


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        log.warning("worker %d ignored SIGTERM for %.0fs; killing it", proc.pid,
                    STOP_GRACE_SECONDS)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    # Children that outlived their leader (pool processes) go with the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def run_one(framework: Framework, workload: str, tasks: int, *, processes: int,
            threads: int, timeout: float) -> RunResult:
    """Pre-load, start the worker, wait for the drain, stop, verify nothing was left."""
    queue = f"bench-{framework.name}-{workload}-{uuid.uuid4().hex[:6]}"
    result = RunResult(framework=framework.name, broker=framework.target.kind,
                       workload=workload, processes=processes, threads=threads,
                       tasks=tasks, ok=False)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{queue}.log"
    result.log_file = str(log_path)
    try:
        framework.preload(queue, workload, tasks)
        loaded = _wait_loaded(framework, queue, tasks)
        if loaded != tasks:
            result.error = f"pre-load: broker shows {loaded} of {tasks} messages"
            return result
        _measure(framework, queue, result, timeout=timeout, log_path=log_path)
    except Exception as exc:  # a broken framework must not stop the other runs
        log.exception("%s/%s/%s failed", framework.name, framework.target.kind, workload)
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            framework.cleanup(queue)
        except Exception:
            log.exception("cleanup of %s failed", queue)
    return result


def _measure(framework: Framework, queue: str, result: RunResult, *, timeout: float,
             log_path: Path) -> None:
    tasks, processes = result.tasks, result.processes
    counter = CompletionCounter(tasks)
    env = {**os.environ, COMPLETION_FILE_ENV: counter.path, QUEUE_ENV: queue,
           BROKER_URL_ENV: framework.target.url, "PYTHONPATH": str(REPO_ROOT),
           **framework.worker_env(queue, processes)}
    command = framework.worker_command(queue, processes, result.threads)
    log.debug("starting %s", " ".join(command))
    with log_path.open("wb") as log_file:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            probe = SteadyCpu(proc.pid)
            finished_at, problem = _wait_drained(framework, queue, proc, counter,
                                                 started + timeout, probe)
            if finished_at is not None:
                result.worker_cpu_s = group_cpu_seconds(proc.pid)
                result.cpu_us_per_task = probe.per_task_us(result.worker_cpu_s, tasks)
                if framework.target.kind != "redis":
                    time.sleep(RABBIT_SETTLE_SECONDS)
        finally:
            _stop(proc)
            counter.close()
    result.completed = counter.distinct
    result.duplicates = counter.duplicates
    if counter.first_at is not None:
        result.first_completion_s = counter.first_at - started
    if finished_at is None:
        result.error = (f"worker {problem} after {counter.distinct}/{tasks} completions; "
                        f"log: {_tail(log_path)}")
        return
    result.left_on_broker = framework.unfinished(queue)
    if result.left_on_broker:
        result.error = f"{result.left_on_broker} messages still on the broker after the run"
        return
    result.wall_s = finished_at - started
    result.tasks_per_s = tasks / result.wall_s
    if counter.first_at is not None and counter.all_done_at is not None \
            and counter.all_done_at > counter.first_at:
        result.steady_tasks_per_s = (tasks - 1) / (counter.all_done_at - counter.first_at)
    result.ok = True


class SteadyCpu:
    """Group CPU at the first completion, so start-up (imports, forks) is left out."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.cpu_s: float | None = None
        self.done = 0

    def mark(self, counter: CompletionCounter) -> None:
        if self.cpu_s is None and counter.distinct:
            self.cpu_s, self.done = group_cpu_seconds(self.pgid), counter.distinct

    def per_task_us(self, cpu_end: float, tasks: int) -> float:
        if self.cpu_s is None or tasks <= self.done:
            return cpu_end / tasks * 1e6
        return (cpu_end - self.cpu_s) / (tasks - self.done) * 1e6


def _wait_drained(framework: Framework, queue: str, proc: subprocess.Popen[bytes],
                  counter: CompletionCounter, deadline: float,
                  probe: SteadyCpu) -> tuple[float | None, str]:
    """When every task ran and (on Redis) was acked, or None and what went wrong."""
    while not counter.wait_all(POLL_SECONDS * 2):
        probe.mark(counter)
        if proc.poll() is not None:
            return None, f"exited with status {proc.returncode}"
        if time.perf_counter() > deadline:
            return None, "timed out"
    assert counter.all_done_at is not None
    if framework.target.kind != "redis":
        # RabbitMQ shows unacked counts only seconds late, so the clock stops at the last
        # execution; `_measure` lets acks land, stops the worker and checks the queue:
        # a message that ran but was never acked would be back in it.
        return counter.all_done_at, ""
    # Executed is not yet acked: on Redis the acks are visible live, so wait for them.
    while framework.unfinished(queue) > 0:
        if proc.poll() is not None:
            return None, f"exited with status {proc.returncode} before acking"
        if time.perf_counter() > deadline:
            return None, "timed out waiting for acks"
        time.sleep(POLL_SECONDS)
    return time.perf_counter(), ""
