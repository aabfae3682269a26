"""Cordoning with the REAL worker image on kind: the controller (a host subprocess, pod
access through the API server's proxy) cordons the busy pod the policy wants gone,
removes the idle pod first, then the cordoned one once its task is done, and never
interrupts a task.

Placement is made deterministic: pods run one process each, and a pod that has
finished a 0.5 s warm-up task holds exactly one message (capacity = concurrency for
tasks of 0.2 s or more), so each long task lands on the pod the test means.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from controller.podstate import PodState, PodStateReader
from tests.k8s.test_controller_k8s import Controller, apply, pool_status, wait_for
from tests.plugins.kind import KubeCluster
from worker.brokers import open_broker
from worker.envelope import Envelope
from worker.results import SUCCESS, ResultStore

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

TOKEN = "k8sCordonTestToken"
QUEUE = "cordon"
SHORT, LONG_B, LONG_A = 0.5, 45.0, 300.0


@contextlib.contextmanager
def port_forward(cluster: KubeCluster, ns: str, target: str, port: int) -> Iterator[int]:
    """`kubectl port-forward` to a free local port (the host reaches in-cluster Redis)."""
    proc = subprocess.Popen(
        [str(cluster.kubectl_path), "--kubeconfig", str(cluster.kubeconfig), "-n", ns,
         "port-forward", target, f":{port}", "--address", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()   # "Forwarding from 127.0.0.1:NNNNN -> 6379"
        if "Forwarding from" not in line:
            pytest.fail(f"port-forward {target} failed: {line!r} "
                        f"{proc.stderr.read() if proc.stderr else ''}", pytrace=False)
        yield int(line.split("127.0.0.1:")[1].split()[0])
    finally:
        proc.terminate()
        proc.wait(10)


def redis_manifests(version: str) -> list[dict[str, Any]]:
    labels = {"app": "redis"}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "redis"},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                      "name": "redis", "image": f"qscale-redis:{version}",
                      "imagePullPolicy": "Never", "command": ["redis-server"],
                      "args": ["--save", "", "--appendonly", "no", "--protected-mode", "no"],
                      "ports": [{"containerPort": 6379}],
                      "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]},
                                         "periodSeconds": 1}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis"},
         "spec": {"selector": labels, "ports": [{"port": 6379}]}},
    ]


def worker_manifest(version: str) -> dict[str, Any]:
    labels = {"app": "workers"}
    env = {"QSCALE_BROKER_URL": "redis://redis:6379/0", "QSCALE_QUEUES": QUEUE,
           "QSCALE_IMPORTS": "worker.demo_tasks", "QSCALE_CONCURRENCY": "1",
           "QSCALE_DRAIN_SECONDS": "20", "QSCALE_LOG_LEVEL": "INFO"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "workers"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "terminationGracePeriodSeconds": 30,
                     "containers": [{
                         "name": "worker", "image": f"qscale:{version}",
                         "imagePullPolicy": "Never",
                         "command": ["python", "-m", "worker", "run"],
                         "env": [*({"name": k, "value": v} for k, v in env.items()),
                                 {"name": "QSCALE_POD_NAME", "valueFrom": {
                                     "fieldRef": {"fieldPath": "metadata.name"}}},
                                 {"name": "QSCALE_CONTROL_TOKEN", "valueFrom": {
                                     "secretKeyRef": {"name": "control", "key": "token"}}}],
                         "ports": [{"containerPort": 8080}],
                         "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080},
                                            "periodSeconds": 1},
                         "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}}]}}},
    }


def workerpool(broker_url: str) -> dict[str, Any]:
    # Queue mode, 2 tasks per slot: two busy pods with one task each need one pod, so
    # the busy-pod floor holds two and Decision.drain_pods is 1.
    return {"apiVersion": "qscale.io/v1alpha1", "kind": "WorkerPool",
            "metadata": {"name": "workers"},
            "spec": {"queues": [QUEUE], "broker": {"url": broker_url},
                     "targetRef": {"name": "workers"}, "concurrency": 1, "mode": "queue",
                     "targetPerSlot": 2.0, "minReplicas": 1, "maxReplicas": 3,
                     "scaleDownWindowSeconds": 5, "podStatePort": 8080}}


class Pods:
    """The workers' pods and their /state, read the way the controller reads them."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.reader = PodStateReader(client.CoreV1Api(api), access="apiserver-proxy",
                                     timeout=3.0)
        self.ns = ns

    def all(self) -> dict[str, PodState]:
        return {p.name: p for p in self.reader.read(self.ns, {"app": "workers"}, 8080)}

    def ready(self) -> list[PodState]:
        return sorted((p for p in self.all().values()
                       if p.ready_at is not None and not p.terminating and p.reachable),
                      key=lambda p: p.created)


@contextlib.contextmanager
def redis_for_workers(cluster: KubeCluster, ns: str,
                      version: str) -> Iterator[tuple[str, ResultStore, Pods]]:
    """The control-token Secret and an in-cluster Redis for the workers, reached from
    the host through port-forward: (broker URL, result store, pod-state reader)."""
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    cluster.kubectl("-n", ns, "create", "secret", "generic", "control",
                    f"--from-literal=token={TOKEN}")
    apply(cluster, ns, *redis_manifests(version))
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/redis", "--timeout=120s")
    pods = Pods(api, ns)
    with port_forward(cluster, ns, "svc/redis", 6379) as port:
        url = f"redis://127.0.0.1:{port}/0"
        results = ResultStore(url)
        try:
            yield url, results, pods
        finally:
            results.close()
            pods.reader.close()


def publish_sleep(url: str, seconds: float) -> str:
    """Enqueue one qscale.demo.sleep task; its id."""
    envelope = Envelope.create("qscale.demo.sleep", [seconds], queue=QUEUE)
    with open_broker(url) as broker:
        broker.publish(QUEUE, envelope.encode())
    return envelope.id


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
