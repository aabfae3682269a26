"""CPU per message of the RabbitMQ server and of the worker, per framework, mid-drain.

    python -m bench.profile_rabbit_cpu [--tasks 20000] [--rounds 3]

On a 2-core machine the broker and the worker share the cores, so the RabbitMQ
server's own CPU per delivered-and-acked message bounds every client: this
measures it (beam.smp utime+stime from /proc, between 10% and 90% of the drain)
next to the worker group's CPU, for qscale, Dramatiq (-t 8) and qscale on a
priority queue (QSCALE_MAX_PRIORITY=9) on the same server. Other RabbitMQ users
running at the same time inflate the server column; compare the medians.
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from bench.completions import CompletionCounter
from bench.cpu import group_cpu_seconds
from bench.frameworks import FRAMEWORKS, BrokerTarget
from bench.harness import REPO_ROOT
from bench.workload import BROKER_URL_ENV, COMPLETION_FILE_ENV, QUEUE_ENV

TICK = os.sysconf("SC_CLK_TCK")


def beam_pid() -> int:
    """The RabbitMQ node started by hack/services.sh: beam.smp run by user rabbitmq."""
    uid = pwd.getpwnam("rabbitmq").pw_uid
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid and \
                    b"beam.smp" in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:
            continue
    raise SystemExit("profile_rabbit_cpu: no beam.smp of user rabbitmq (bash hack/services.sh)")


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(name: str, target: BrokerTarget, tasks: int, threads: int, beam: int
            ) -> tuple[float, float, float]:
    """(server µs, worker µs per message, messages/s) between 10% and 90% of the drain."""
    # "qscale-prio9": qscale on a priority queue (QSCALE_MAX_PRIORITY=9, the old default)
    framework = FRAMEWORKS[name.split("-", maxsplit=1)[0]](target)
    queue = f"bench-rcpu-{name}-{uuid.uuid4().hex[:6]}"
    os.environ["QSCALE_MAX_PRIORITY"] = "9" if name.endswith("prio9") else "0"
    framework.preload(queue, "noop", tasks)
    counter = CompletionCounter(tasks)
    env = {**os.environ, COMPLETION_FILE_ENV: counter.path, QUEUE_ENV: queue,
           BROKER_URL_ENV: target.url, "PYTHONPATH": str(REPO_ROOT),
           **framework.worker_env(queue, 2)}
    proc = subprocess.Popen(framework.worker_command(queue, 2, threads), env=env,
                            cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while counter.distinct < tasks // 10:
            time.sleep(0.01)
        n0, t0 = counter.distinct, time.perf_counter()
        s0, w0 = proc_cpu(beam), group_cpu_seconds(proc.pid)
        while counter.distinct < tasks * 9 // 10:
            time.sleep(0.01)
        n1, t1 = counter.distinct, time.perf_counter()
        s1, w1 = proc_cpu(beam), group_cpu_seconds(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        counter.close()
        framework.cleanup(queue)
    done = max(1, n1 - n0)
    return (s1 - s0) / done * 1e6, (w1 - w0) / done * 1e6, done / (t1 - t0)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_rabbit_cpu",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="qscale,dramatiq,qscale-prio9",
                        help="comma-separated: qscale, dramatiq, qscale-prio9")
    parser.add_argument("--amqp-url", default="amqp://qscale:qscale@127.0.0.1:5672//")
    parser.add_argument("--rabbitmq-api", default="http://qscale:qscale@127.0.0.1:15672")
    args = parser.parse_args()
    target = BrokerTarget("rabbitmq", args.amqp_url, args.rabbitmq_api)
    beam = beam_pid()
    rows: dict[str, list[tuple[float, float, float]]] = {
        name.strip(): [] for name in args.variants.split(",") if name.strip()}
    for round_no in range(args.rounds):
        for name, runs in rows.items():
            got = measure(name, target, args.tasks, 8, beam)
            runs.append(got)
            print(f"round {round_no + 1} {name:9s} server {got[0]:6.1f} us/msg  "
                  f"worker {got[1]:6.1f} us/msg  {got[2]:8,.0f} msg/s", flush=True)
    for name, runs in rows.items():
        server = statistics.median(run[0] for run in runs)
        worker = statistics.median(run[1] for run in runs)
        rate = statistics.median(run[2] for run in runs)
        print(f"median {name:9s} server {server:6.1f} us/msg  worker {worker:6.1f} us/msg  "
              f"{rate:8,.0f} msg/s  (server+worker {server + worker:6.1f} us)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
