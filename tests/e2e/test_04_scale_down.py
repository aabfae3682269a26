"""Scale-down while long tasks run: idle pods go first, no long task is interrupted.

A burst of short tasks pushes the pool to its maximum; once it is scaling, a few
60 s tasks join. When the short ones are done the load drops to the long tasks
alone (on at most 3 of the 5 pods) and the controller scales down while they run.
Each long task must run exactly once (one start, one finish, on one pod): a busy
pod picked for removal would drain for only 10 s, its task would be killed and
redelivered, and show up here as a second start.
"""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.release import MIN_REPLICAS, Release, wait_until
from tests.e2e.timeline import Timeline

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow]

LONG_TASKS = 3
LONG_SECONDS = 60.0
SHORTS, SHORT_SECONDS = 400, 0.2


def test_scale_down_spares_busy_pods(release: Release) -> None:
    release.wait_replicas(MIN_REPLICAS, timeout=180)
    short_run, long_run = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("short", "long"))
    with Timeline(release, "scale-down") as timeline:
        release.enqueue(short_run, SHORTS, SHORT_SECONDS)
        wait_until(lambda: (release.deployment()["status"].get("readyReplicas") or 0) >= 2,
                   timeout=180, interval=2, what="the pool to scale up")
        release.enqueue(long_run, LONG_TASKS, LONG_SECONDS)
        shorts = release.wait_all_finished(short_run, timeout=300)
        longs = release.wait_all_finished(long_run, timeout=300)
        release.wait_replicas(MIN_REPLICAS, timeout=180)
    report = release.verify(long_run, events=True)
    spans: dict[str, tuple[float | None, float | None]] = {}
    for event in report["events"]:
        begin, end = spans.get(event["id"], (None, None))
        if event["ev"] == "start":
            begin = event["t"]
        else:
            end = event["t"]
        spans[event["id"]] = (begin, end)
    during = [(at, before, after) for at, before, after in timeline.scale_downs()
              if any(b is not None and e is not None and b < at < e for b, e in spans.values())]
    print(f"\n[{release.broker}] peak {timeline.peak_desired()} replicas; long tasks on pods "
          f"{report['pods']}; scale-downs while a long task ran: "
          f"{[f'{b}->{a}' for _, b, a in during]}; long executions {longs['executions']} "
          f"(duplicated {longs['duplicated']}, interrupted {longs['interrupted']}); "
          f"short duplicates {shorts['duplicated']}")
    assert shorts["missing"] == 0, shorts
    assert longs["finished"] == LONG_TASKS, longs
    assert longs["interrupted"] == 0 and longs["duplicated"] == 0, longs
    assert longs["executions"] == LONG_TASKS, longs
    assert timeline.peak_desired() >= 3, "the burst did not scale the pool up"
    assert during, f"no scale-down happened while long tasks ran: {timeline.scale_downs()}"
