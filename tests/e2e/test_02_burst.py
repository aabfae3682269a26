"""A burst of 2,000 short tasks: scale up from min, finish every task, back to min.

The scaling timeline (ready depth, in-flight, desired replicas, pods Ready, every
second) is saved as artifacts/e2e-burst-<broker>.png.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.e2e.release import (
    DRAIN_SECONDS,
    MAX_REPLICAS,
    MIN_REPLICAS,
    SCALE_DOWN_WINDOW_SECONDS,
    Release,
)
from tests.e2e.timeline import Timeline

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow]

BURST = 2000
TASK_SECONDS = 0.3


def test_burst_scales_up_completes_and_returns_to_min(release: Release) -> None:
    release.wait_replicas(MIN_REPLICAS, timeout=120)
    run = f"burst-{uuid.uuid4().hex[:8]}"
    with Timeline(release, "burst") as timeline:
        time.sleep(2)  # a few samples at rest
        started = time.monotonic()
        release.enqueue(run, BURST, TASK_SECONDS)
        report = release.wait_all_finished(run, timeout=420)
        drained_after = time.monotonic() - started
        release.wait_replicas(MIN_REPLICAS,
                              timeout=SCALE_DOWN_WINDOW_SECONDS + DRAIN_SECONDS + 120)
        back_after = time.monotonic() - started
        time.sleep(2)

    peak = timeline.peak_desired()
    first_up = timeline.first_time(lambda s: (s.desired or 0) > MIN_REPLICAS)
    print(f"\n[{release.broker}] {BURST} x {TASK_SECONDS}s tasks: all finished after "
          f"{drained_after:.0f}s, back to {MIN_REPLICAS} replica after {back_after:.0f}s; "
          f"peak {peak} replicas (max {MAX_REPLICAS}); first scale-up at t={first_up}s; "
          f"executions {report['executions']}, duplicates {report['duplicated']}, "
          f"pods used {len(report['pods'])}")
    assert report["missing"] == 0 and report["finished"] == BURST, report
    assert peak >= 3, f"the pool never scaled up past {peak} replicas"
    assert report["unexpected"] == 0, report

    scaled_up = [e for e in release.events("ScaledUp")
                 if e["involvedObject"]["kind"] == "WorkerPool"]
    assert scaled_up, "no ScaledUp event on the WorkerPool"
    print("events:", "; ".join(e["message"] for e in scaled_up[-3:]))
    status = release.get_json("workerpool", release.workerpool)["status"]
    assert status["currentReplicas"] == MIN_REPLICAS, status
    assert status.get("lastDecisionReason"), status
