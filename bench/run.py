"""Run the benchmark: `python -m bench.run` (see --help), or `make bench`.

Pre-loads each framework's queue, starts its worker with the same process count
on the same Redis and RabbitMQ, and times the drain. Prints a table of median
tasks/s with qscale's ratio to each peer and writes bench/results/latest.json
and bench/results/throughput.png.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report
from bench.baseline import run_bare
from bench.frameworks import FRAMEWORKS, BrokerTarget
from bench.frameworks.base import rabbit_ready, redis_client
from bench.harness import REPO_ROOT, RunResult, run_one
from bench.plan import Case, PlanOptions, build_cases, summarize
from bench.workload import CPU_LOOP_ITERATIONS, WORKLOADS

log = logging.getLogger("bench.run")

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _csv(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [v for v in items if v not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return items
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", type=_csv(("redis", "rabbitmq")),
                        default=("redis", "rabbitmq"))
    parser.add_argument("--frameworks", type=_csv(tuple(FRAMEWORKS)), default=tuple(FRAMEWORKS))
    parser.add_argument("--workloads", type=_csv(WORKLOADS), default=WORKLOADS)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2,
                        help="worker processes for every framework (default: cores)")
    parser.add_argument("--noop-tasks", type=int, default=10_000)
    parser.add_argument("--cpu-tasks", type=int, default=1000)
    parser.add_argument("--rq-max-tasks", type=int, default=3_000,
                        help="cap for RQ, which is ~100x slower than the others")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds; every case runs once per round, medians are reported")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15",
                        help="an otherwise empty Redis DB; the bench flushes it after runs")
    parser.add_argument("--amqp-url", default="amqp://qscale:qscale@127.0.0.1:5672//")
    parser.add_argument("--rabbitmq-api", default="http://qscale:qscale@127.0.0.1:15672")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="re-summarize the runs of an earlier latest.json; run nothing")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.processes < 1 or args.repeat < 1 or args.noop_tasks < 1 or args.cpu_tasks < 1:
        parser.error("--processes, --repeat, --noop-tasks and --cpu-tasks must be >= 1")
    return args


def preflight(args: argparse.Namespace) -> str | None:
    """Why the brokers cannot be used, in one line, or None."""
    if "redis" in args.brokers or "rq" in args.frameworks:
        try:
            keys = redis_client(args.redis_url).dbsize()
        except Exception as exc:
            return f"--redis-url {args.redis_url}: {exc} (start it: bash hack/services.sh)"
        if keys:
            return (f"--redis-url {args.redis_url}: DB holds {keys} keys; the bench needs an "
                    "empty DB of its own (it flushes it) - pick another DB number")
    if "rabbitmq" in args.brokers:
        try:
            rabbit_ready(args.amqp_url, "bench-preflight")
        except Exception as exc:
            return f"--amqp-url {args.amqp_url}: {exc} (start it: bash hack/services.sh)"
    return None


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("qscale", "celery", "kombu", "dramatiq", "rq", "redis", "pika", "amqp"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _git_state() -> str:
    """HEAD and whether worker/ has uncommitted edits: qscale's code is a moving target."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=False)
        return done.stdout.strip()
    dirty = git("status", "--porcelain", "--", "worker")
    return git("rev-parse", "--short", "HEAD") + (" (worker/ has uncommitted edits)" if dirty
                                                   else "")


def run_case(case: Case, targets: dict[str, BrokerTarget], timeout: float) -> RunResult:
    if case.framework == "bare":
        result = run_bare(case.tasks, case.processes)
    else:
        framework = FRAMEWORKS[case.framework](targets[case.broker])
        result = run_one(framework, case.workload, case.tasks, processes=case.processes,
                         threads=case.threads, timeout=timeout)
    rate = f"{result.tasks_per_s:,.0f} tasks/s" if result.tasks_per_s else "FAILED"
    print(f"  {case.framework:9s} {case.broker:9s} {case.workload:5s} p={case.processes} "
          f"t={case.threads} n={case.tasks:<6d} {rate:>16s}"
          + (f"  dup={result.duplicates}" if result.duplicates else "")
          + (f"  [{result.error}]" if result.error else ""), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.from_json:
        return resummarize(args.from_json, args.out)
    problem = preflight(args)
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    targets = {"redis": BrokerTarget("redis", args.redis_url),
               "rabbitmq": BrokerTarget("rabbitmq", args.amqp_url, args.rabbitmq_api)}
    options = PlanOptions(brokers=args.brokers, frameworks=args.frameworks,
                          workloads=args.workloads, processes=args.processes,
                          noop_tasks=args.noop_tasks, cpu_tasks=args.cpu_tasks,
                          rq_max_tasks=args.rq_max_tasks)
    cases = build_cases(options)
    started = time.time()
    load_before = os.getloadavg()
    git_before = _git_state()
    runs: list[RunResult] = []
    for round_no in range(1, args.repeat + 1):
        print(f"round {round_no}/{args.repeat}: {len(cases)} runs", flush=True)
        runs.extend(run_case(case, targets, args.timeout) for case in cases)
        if round_no < args.repeat:  # keep what finished if a later round is interrupted
            report.write_json(args.out / "partial.json",
                              {"meta": {"processes": args.processes, "partial": True},
                               "runs": [r.to_json() for r in runs]})
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "cpu_count": os.cpu_count(), "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(), "versions": _versions(),
        "argv": sys.argv[1:], "processes": args.processes, "repeat": args.repeat,
        "cpu_loop_iterations": CPU_LOOP_ITERATIONS,
        "git_before": git_before, "git_after": _git_state(),
        "notes": {name: fw.note for name, fw in FRAMEWORKS.items()},
    }
    publish(runs, meta, args.out)
    return 0 if all(r.ok for r in runs) else 1


def publish(runs: list[RunResult], meta: dict[str, Any], out: Path) -> None:
    """Print the table and goals; write latest.json and throughput.png under `out`."""
    processes = int(meta["processes"])
    summary = summarize(runs, processes)
    table = report.table_text(summary, processes)
    goals = report.goal_lines(summary)
    print("\n" + table + "\n\n" + "\n".join(goals))
    payload = {"meta": meta, "summary": summary, "goals": goals, "table_markdown": table,
               "runs": [r.to_json() for r in runs]}
    report.write_json(out / "latest.json", payload)
    report.plot(summary, out / "throughput.png", processes)
    print(f"\nwrote {out / 'latest.json'} and {out / 'throughput.png'}")


def resummarize(source: Path, out: Path) -> int:
    data = json.loads(source.read_text())
    runs = [RunResult(**run) for run in data["runs"]]
    publish(runs, data["meta"], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
