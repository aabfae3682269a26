"""The REAL worker image on kind, for tests about what workers do under the controller:
an in-cluster Redis reached from the host through port-forward, the control-token
Secret, a worker Deployment (one process per pod) and a reader of the pods' /state.
Shared by the cordon and batching tests.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from controller.kubeapi import KubeApi
from controller.podreader import PodStateReader
from controller.podstate import PodState
from tests.k8s.harness import apply
from tests.plugins.kind import KubeCluster
from worker.brokers import open_broker
from worker.envelope import Envelope
from worker.results import ResultStore

TOKEN = "k8sCordonTestToken"
QUEUE = "cordon"

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


class Pods:
    """The workers' pods and their /state, read the way the controller reads them."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.reader = PodStateReader(KubeApi(api), access="apiserver-proxy",
                                     timeout=3.0)
        self.ns = ns

    def all(self) -> dict[str, PodState]:
        return {p.name: p for p in self.reader.read(self.ns, "app=workers", 8080)}

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
