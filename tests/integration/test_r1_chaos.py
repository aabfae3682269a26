"""R1: no task is lost while children and whole workers are SIGKILLed at random moments.

5,000 tasks per broker; during the run 5 children and 3 whole workers are killed
(a new worker is started after each whole-worker kill). Every task id must
complete at least once; duplicates (at-least-once redelivery) are reported.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests import runtime_tasks as rt
from tests.runtime_harness import WorkerProcess, broker, publish, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.rabbitmq]

TASKS = 5000
CHILD_KILLS = 5
WORKER_KILLS = 3
TASK_SECONDS = 0.004   # keeps the run ~15 s long so the kills land mid-stream


def test_r1_no_task_lost_under_sigkill_chaos(broker_url: str, queue_name: str) -> None:
    key = f"rt:{queue_name}"
    rng = random.Random(os.environ.get("QSCALE_R1_SEED", "1"))
    ids = publish(broker_url, queue_name, "rt.sleep_record", [[key, TASK_SECONDS]] * TASKS)
    settings = {"retry_backoff_base": 0.2}
    worker = WorkerProcess(broker_url, queue_name, **settings).start()
    workers = [worker]
    actions = ["child"] * CHILD_KILLS + ["worker"] * WORKER_KILLS
    rng.shuffle(actions)
    done_kills: list[str] = []
    started = time.monotonic()
    try:
        worker.wait_ready()
        for action in actions:
            time.sleep(rng.uniform(0.5, 1.5))
            if len(rt.runs(key)) >= TASKS:
                break
            if action == "child":
                children = wait_until(worker.children, 10, "children", worker)
                os.kill(rng.choice(children), signal.SIGKILL)
            else:
                worker.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                worker.wait(10)
                worker = WorkerProcess(broker_url, queue_name, **settings).start()
                workers.append(worker)
                worker.wait_http()
            done_kills.append(action)
        wait_until(lambda: len(rt.runs(key)) >= TASKS, 240, "every task to complete", worker,
                   interval=0.5)
        elapsed = time.monotonic() - started
        runs = rt.runs(key)
        missing = set(ids) - set(runs)
        duplicates = sum(runs.values()) - len(runs)
        with broker(broker_url) as b:
            dead = b.dead_letters(queue_name)
        print(f"\nR1[{urlscheme(broker_url)}]: {TASKS} tasks, kills={done_kills}, "
              f"completed={len(runs)}, missing={len(missing)}, duplicates={duplicates}, "
              f"dead={len(dead)}, elapsed={elapsed:.1f}s")
        assert not missing
        assert set(runs) == set(ids)
        assert done_kills.count("child") >= 3 and done_kills.count("worker") >= 2, done_kills
        assert not dead, [d.reason for d in dead]
    finally:
        for w in workers:
            w.stop()


def urlscheme(url: str) -> str:
    return url.split(":", 1)[0]
