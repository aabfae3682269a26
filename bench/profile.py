"""Profile one framework's worker under the benchmark load with py-spy.

    python -m bench.profile --framework qscale --broker rabbitmq

Pre-loads the queue like `bench.run`, starts the worker, samples its whole
process tree with `py-spy record --idle` for a few seconds mid-drain, and prints
where each process kind (supervisor main thread, children, other threads) spends
its samples, split into waiting (blocked in a read, select, poll or sleep) and
busy. The raw py-spy output is kept for flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.completions import CompletionCounter
from bench.frameworks import FRAMEWORKS, BrokerTarget
from bench.harness import REPO_ROOT
from bench.workload import BROKER_URL_ENV, COMPLETION_FILE_ENV, QUEUE_ENV

# Leaf frames that mean "blocked, waiting for something", not "working".
WAITING = ("select", "poll", "_recv", "recv", "read", "sleep", "wait", "accept",
           "_read_from_socket", "readline", "_read_ahead.<locals>.<lambda>")


def classify(stack: list[str]) -> str:
    """supervisor / child / thread, from py-spy's process and thread root frames."""
    processes = [f for f in stack if f.startswith("process ")]
    if len(processes) > 1:
        return "child"
    return "thread" if any("Thread._bootstrap" in f for f in stack) else "supervisor"


def summarize(raw: Path, top: int) -> str:
    busy: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    waiting: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        stack, count = stack_text.split(";"), int(count_text)
        role = classify(stack)
        totals[role] += count
        leaf = stack[-1]
        if any(leaf.split(" (")[0].endswith(w) or leaf.startswith(w) for w in WAITING):
            waiting[role] += count
            continue
        busy[role][leaf] += count
        for frame in set(stack):
            if "worker/" in frame or "bench/" in frame:
                inclusive[role][frame] += count
    out = []
    for role in ("supervisor", "child", "thread"):
        if not totals[role]:
            continue
        share = waiting[role] / totals[role]
        out.append(f"== {role}: {totals[role]} samples, {share:.0%} waiting")
        out += [f"  self {n:6d}  {frame}" for frame, n in busy[role].most_common(top)]
        out += [f"  incl {n:6d}  {frame}" for frame, n in inclusive[role].most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", choices=tuple(FRAMEWORKS), default="qscale")
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    parser.add_argument("--workload", choices=("noop", "cpu"), default="noop")
    parser.add_argument("--tasks", type=int, default=40_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=5, help="sampling duration")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--amqp-url", default="amqp://qscale:qscale@127.0.0.1:5672//")
    parser.add_argument("--rabbitmq-api", default="http://qscale:qscale@127.0.0.1:15672")
    parser.add_argument("--out", type=Path, default=Path("/tmp/qscale-bench-profile.txt"))
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy")
    if spy is None:
        print("bench.profile: py-spy not found; pip install py-spy", file=sys.stderr)
        return 2
    target = (BrokerTarget("redis", args.redis_url) if args.broker == "redis"
              else BrokerTarget("rabbitmq", args.amqp_url, args.rabbitmq_api))
    framework = FRAMEWORKS[args.framework](target)
    queue = f"bench-profile-{uuid.uuid4().hex[:6]}"
    framework.preload(queue, args.workload, args.tasks)
    counter = CompletionCounter(args.tasks)
    env = {**os.environ, COMPLETION_FILE_ENV: counter.path, QUEUE_ENV: queue,
           BROKER_URL_ENV: target.url, "PYTHONPATH": str(REPO_ROOT),
           **framework.worker_env(queue, args.processes)}
    proc = subprocess.Popen(framework.worker_command(queue, args.processes, args.threads),
                            env=env, cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while counter.distinct < args.tasks // 20 and proc.poll() is None:
            time.sleep(0.05)  # past start-up: sample the steady state only
        before = counter.distinct
        subprocess.run([spy, "record", "--pid", str(proc.pid), "--subprocesses", "--idle",
                        "--rate", "250", "--duration", str(args.seconds), "--format", "raw",
                        "-o", str(args.out)], check=True, capture_output=True)
        print(f"{counter.distinct - before} tasks completed while sampling "
              f"({args.seconds}s, py-spy slows the target); raw stacks: {args.out}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        counter.close()
        framework.cleanup(queue)
    print(summarize(args.out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
