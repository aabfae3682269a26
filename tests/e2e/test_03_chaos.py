"""Losing pods mid-run loses no task: worker pods deleted and SIGKILLed, the broker restarted.

Worker kills use three paths: a normal `kubectl delete pod` (the worker drains), a
forced delete with --grace-period=0, and SIGKILL of the worker's PID 1 from the
kind node (inside the container PID 1 ignores SIGKILL, so `kubectl exec kill -9 1`
would do nothing). Redelivery after a hard kill may run a task twice
(at-least-once); the count is printed.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from tests.e2e.release import Release, wait_until
from tests.e2e.timeline import Timeline

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow]

TASK_SECONDS = 0.3


def sigkill_pod(release: Release, pod: str) -> None:
    """SIGKILL the pod's main process from its node (a crash, not a shutdown)."""
    manifest = release.get_json("pod", pod)
    container_id = manifest["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    node = manifest["spec"]["nodeName"]  # kind's node containers carry the node names
    tasks = subprocess.run(["docker", "exec", node, "ctr", "-n", "k8s.io", "task", "ls"],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    pid = next((line.split()[1] for line in tasks.splitlines()
                if line.startswith(container_id)), None)
    assert pid, f"container {container_id} of {pod} not found on {node}"
    subprocess.run(["docker", "exec", node, "kill", "-9", pid], check=True, timeout=60)


def _wait_for_progress(release: Release, timeline: Timeline, pods: int) -> None:
    """Until at least `pods` workers run and the queue has started to drain."""
    def busy() -> bool:
        last = timeline.samples[-1] if timeline.samples else None
        return len(release.running_worker_pods()) >= pods and last is not None \
            and (last.in_flight or 0) > 0
    wait_until(busy, timeout=180, interval=2, what=f"{pods} busy worker pods")


def test_worker_pods_deleted_and_killed_lose_nothing(release: Release) -> None:
    run = f"kill-{uuid.uuid4().hex[:8]}"
    count = 800
    with Timeline(release, "worker-kills") as timeline:
        release.enqueue(run, count, TASK_SECONDS)
        _wait_for_progress(release, timeline, pods=3)
        victims = release.running_worker_pods()[:3]
        release.kubectl("delete", "pod", victims[0], "--wait=false")
        sigkill_pod(release, victims[1])
        release.kubectl("delete", "pod", victims[2], "--grace-period=0", "--force",
                        "--wait=false")
        print(f"\n[{release.broker}] deleted {victims[0]}, SIGKILLed {victims[1]}, "
              f"force-deleted {victims[2]}")
        report = release.wait_all_finished(run, timeout=420)
    print(f"[{release.broker}] {count} tasks: finished {report['finished']}, "
          f"executions {report['executions']}, duplicated {report['duplicated']}, "
          f"interrupted {report['interrupted']}")
    assert report["missing"] == 0 and report["finished"] == count, report


def test_broker_pod_deleted_loses_nothing(release: Release) -> None:
    run = f"broker-{uuid.uuid4().hex[:8]}"
    count = 500
    with Timeline(release, "broker-restart") as timeline:
        release.enqueue(run, count, TASK_SECONDS)
        _wait_for_progress(release, timeline, pods=2)
        uid = release.get_json("pod", release.broker_pod)["metadata"]["uid"]
        release.kubectl("delete", "pod", release.broker_pod, "--wait=true", timeout=180)
        down_at = time.monotonic()

        def replaced() -> bool:
            try:
                pod = release.get_json("pod", release.broker_pod)
            except AssertionError:  # not recreated yet
                return False
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in pod["status"].get("conditions", []))
            return pod["metadata"]["uid"] != uid and ready
        wait_until(replaced, timeout=240, interval=2,
                   what=f"{release.broker_pod} back and Ready")
        print(f"\n[{release.broker}] broker pod back after {time.monotonic() - down_at:.0f}s")
        report = release.wait_all_finished(run, timeout=480)
    print(f"[{release.broker}] {count} tasks across a broker restart: finished "
          f"{report['finished']}, executions {report['executions']}, duplicated "
          f"{report['duplicated']}")
    assert report["missing"] == 0 and report["finished"] == count, report
    assert release.running_worker_pods(), "no worker running after the broker restart"
