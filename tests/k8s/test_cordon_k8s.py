"""Cordoning with the REAL worker image on kind: the controller (a host subprocess, pod
access through the API server's proxy) cordons the busy pod the policy wants gone,
removes the idle pod first, then the cordoned one once its task is done, and never
interrupts a task.

Placement is made deterministic: pods run one process each, and a pod that has
finished a 0.5 s warm-up task holds exactly one message (capacity = concurrency for
tasks of 0.2 s or more), so each long task lands on the pod the test means.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.podstate import PodState
from tests.k8s.harness import Controller, apply, pool_status, wait_for
from tests.k8s.real_workers import (
    QUEUE,
    TOKEN,
    publish_sleep,
    redis_for_workers,
    worker_manifest,
)
from tests.plugins.kind import KubeCluster
from worker.results import SUCCESS

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

SHORT, LONG_B, LONG_A = 0.5, 45.0, 300.0


def workerpool(broker_url: str) -> dict[str, Any]:
    # Queue mode, 2 tasks per slot: two busy pods with one task each need one pod, so
    # the busy-pod floor holds two and Decision.drain_pods is 1.
    return {"apiVersion": "qscale.io/v1alpha1", "kind": "WorkerPool",
            "metadata": {"name": "workers"},
            "spec": {"queues": [QUEUE], "broker": {"url": broker_url},
                     "targetRef": {"name": "workers"}, "concurrency": 1, "mode": "queue",
                     "targetPerSlot": 2.0, "minReplicas": 1, "maxReplicas": 3,
                     "scaleDownWindowSeconds": 5, "podStatePort": 8080}}


def test_cordoned_busy_pod_leaves_after_its_task_idle_pod_first(
        kube_cluster: KubeCluster, namespace: str, image_version: str,
        tmp_path: Path) -> None:
    ns, cluster = namespace, kube_cluster
    with redis_for_workers(cluster, ns, image_version) as (url, results, pods):

        def status(task_id: str) -> str | None:
            record = results.fetch(task_id)
            return None if record is None else str(record["status"])

        def add_pod(count: int) -> PodState:
            cluster.kubectl("-n", ns, "scale", "deployment/workers", f"--replicas={count}")
            ready = wait(f"{count} ready worker pods",
                             lambda: (r := pods.ready()) and len(r) == count and r, 180, 1.0)
            return ready[-1]

        def wait(what: str, check: Callable[[], Any], timeout: float,
                 interval: float = 0.5) -> Any:
            """wait_for, with the workers' logs in the failure."""
            try:
                return wait_for(what, check, timeout, interval)
            except AssertionError as exc:
                logs = cluster.kubectl("-n", ns, "logs", "-l", "app=workers", "--prefix",
                                       "--tail=30", check=False).stdout
                raise AssertionError(f"{exc}\n--- worker logs ---\n{logs}") from None

        def busy(pod: str) -> bool:
            state = pods.all()[pod].state
            return bool(state and state.get("busy") == 1)

        # P1 runs A (long); P2 runs B (shorter); P3 idles. Warm-ups first, so each pod
        # holds one message at a time and the next long task goes where intended.
        apply(cluster, ns, worker_manifest(image_version))
        p1 = add_pod(1).name
        warm = publish_sleep(url, SHORT)
        wait("P1's warm-up", lambda: status(warm) == SUCCESS, 60)
        task_a = publish_sleep(url, LONG_A)
        wait("A running on P1", lambda: busy(p1), 30)
        p2 = add_pod(2).name
        warm = publish_sleep(url, SHORT)
        wait("P2's warm-up", lambda: status(warm) == SUCCESS, 60)
        task_b = publish_sleep(url, LONG_B)
        wait("B running on P2", lambda: busy(p2), 30)
        b_started = time.monotonic()
        p3 = add_pod(3).name
        assert busy(p1) and busy(p2) and not busy(p3)

        controller = Controller(cluster, tmp_path, ns, QSCALE_CONTROL_TOKEN=TOKEN,
                                QSCALE_CONTROLLER_LEASE_NAME="qscale-cordon")
        try:
            apply(cluster, ns, workerpool(url))
            # The idle pod goes first; the busy pod the policy wants gone is cordoned.
            wait("status.cordonedPods 1", lambda: pool_status(cluster, ns, "workers")
                     .get("cordonedPods") == 1, 60)
            state = wait("P2 reporting its cordon",
                             lambda: (s := pods.all()[p2].state) and s.get("cordoned") and s,
                             30)
            assert state["busy"] == 1 and 60 < state["cordon_expires_in"] <= 120, state
            assert f"cordoned pod {ns}/{p2}" in controller.text()
            worker_log = cluster.kubectl("-n", ns, "logs", p2).stdout
            assert "cordoned: claiming nothing new" in worker_log
            wait("P3 (idle) removed", lambda: p3 not in pods.all()
                     or pods.all()[p3].terminating, 60)
            assert status(task_b) is None, "B finished before P3 was removed: test too slow"
            gone = pods.all()
            assert not gone[p2].terminating and not gone[p1].terminating
            assert pool_status(cluster, ns, "workers").get("lastDecisionReason") == \
                "floor:busy-pods"

            # B finishes on the cordoned pod; then that pod (idle) is removed, not P1.
            wait("B done", lambda: status(task_b) == SUCCESS, LONG_B + 60)
            print(f"B ran {time.monotonic() - b_started:.0f}s on the cordoned pod {p2}")
            wait("P2 removed once idle", lambda: p2 not in pods.all()
                     or pods.all()[p2].terminating, 60)
            left = pods.all()
            assert not left[p1].terminating and busy(p1), "P1 must keep running A"
            assert status(task_a) is None          # A still running, never interrupted
            record = results.fetch(task_b)
            assert record is not None and record["attempt"] == 1 and \
                record["result"] >= LONG_B - 1     # B ran once, to the end
            wait("replicas 1", lambda: int(cluster.kubectl_json(
                "-n", ns, "get", "deployment", "workers")["spec"]["replicas"]) == 1, 30)
            wait("no cordons left", lambda: pool_status(cluster, ns, "workers")
                     .get("cordonedPods") == 0, 30)
        finally:
            controller.stop()
            print(controller.text()[-4000:])
