"""Plumbing for running the controller against the real kind API server.

The controller runs as a real subprocess on the host; queues live in the host's Redis;
targets are real Deployments in kind. Worker pods are stand-ins: `sleep` pods where only
the replica count matters, and tiny HTTP pods serving /state (busy count set per pod
through `kubectl exec`) where the test is about which pods are busy. Shared by the
controller, back-off, cordon and batching tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from tests.plugins.kind import KubeCluster
from worker.brokers import open_broker

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "helm" / "qscale" / "files" / "crds" / "workerpool.yaml"
REDIS = os.environ.get("QSCALE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BASE_IMAGE = "qscale/debian:bookworm"
PY_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update && apt-get install -y python3 && rm -rf /var/lib/apt/lists/*
"""
STATE_SERVER = r"""
import http.server, json, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            busy = int(open('/tmp/busy').read().strip() or 0)
        except (OSError, ValueError):
            busy = 0
        body = json.dumps({"pod": socket.gethostname(), "busy": busy, "in_flight": busy,
                           "completed": 0, "service_time_seconds": 0.5,
                           "draining": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
"""


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def deployment(name: str, replicas: int, *, image: str = BASE_IMAGE,
               state_server: bool = False) -> dict[str, Any]:
    command = ["python3", "-c", STATE_SERVER] if state_server else ["sleep", "infinity"]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "worker", "image": image, "imagePullPolicy": "Never",
                        "command": command,
                        "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}},
                        **({"readinessProbe": {"httpGet": {"path": "/state", "port": 8080},
                                               "periodSeconds": 1}}
                           if state_server else {}),
                    }],
                },
            },
        },
    }


def workerpool(name: str, target: str, queue: str, **spec: Any) -> dict[str, Any]:
    body = {"queues": [queue], "broker": {"url": REDIS}, "targetRef": {"name": target},
            "concurrency": 4, "minReplicas": 1, "maxReplicas": 10, "podStatePort": 0,
            "scaleDownWindowSeconds": 5, **spec}
    return {"apiVersion": "qscale.io/v1alpha1", "kind": "WorkerPool",
            "metadata": {"name": name}, "spec": body}


def apply(cluster: KubeCluster, ns: str, *docs: dict[str, Any]) -> None:
    cluster.apply("\n---\n".join(json.dumps(d) for d in docs), namespace=ns)


def spec_replicas(cluster: KubeCluster, ns: str, name: str) -> int:
    return int(cluster.kubectl_json("-n", ns, "get", "deployment", name)["spec"]["replicas"])


def pool_status(cluster: KubeCluster, ns: str, name: str) -> dict[str, Any]:
    return dict(cluster.kubectl_json("-n", ns, "get", "workerpool", name).get("status") or {})


def status_where(cluster: KubeCluster, ns: str, name: str,
                 check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    status = pool_status(cluster, ns, name)
    return status if check(status) else None


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def events(cluster: KubeCluster, ns: str, name: str) -> list[dict[str, Any]]:
    items = cluster.kubectl_json("-n", ns, "get", "events",
                                 f"--field-selector=involvedObject.name={name}")["items"]
    return list(items)


def publish(queue: str, count: int) -> None:
    with open_broker(REDIS) as broker:
        broker.publish_many(queue, [b'{"n": %d}' % i for i in range(count)])


def drain(queue: str) -> None:
    with open_broker(REDIS) as broker:
        while batch := broker.claim([queue], 500, timeout=0.1):
            broker.ack(batch)


class Controller:
    """`python -m controller run` as a subprocess, its log in a file."""

    def __init__(self, cluster: KubeCluster, tmp: Path, namespace: str, **env: str) -> None:
        self.log = tmp / f"controller-{uuid.uuid4().hex[:6]}.log"
        full = dict(os.environ)
        full.update({
            "QSCALE_CONTROLLER_NAMESPACE": namespace,
            "QSCALE_CONTROLLER_LEASE_NAMESPACE": namespace,
            "QSCALE_CONTROLLER_POD_STATE_ACCESS": "apiserver-proxy",
            "QSCALE_CONTROLLER_HTTP_PORT": "0",
            # Through the API server's pod proxy on a loaded 2-core host, 0.5 s is too short
            # (an unanswered pod counts as busy, so scale-downs would stall).
            "QSCALE_CONTROLLER_POD_STATE_TIMEOUT_SECONDS": "3",
            "QSCALE_CONTROLLER_IDENTITY": f"ctl-{uuid.uuid4().hex[:6]}",
        })
        full.update(env)
        self.identity = full["QSCALE_CONTROLLER_IDENTITY"]
        if full.get("QSCALE_CONTROLLER_LEADER_ELECTION", "true").lower() != "false":
            # The Lease is part of the install (the chart ships it); the controller
            # only reads and renews it (RBAC: get/update by name, no create).
            lease = full.get("QSCALE_CONTROLLER_LEASE_NAME", "qscale-controller")
            cluster.apply(json.dumps({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": lease, "namespace": namespace}, "spec": {}}),
                namespace=namespace)
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "run", "--kubeconfig",
             str(cluster.kubeconfig)], cwd=REPO, env=full, stdout=self._out,
            stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def is_leader(self) -> bool:
        lines = [ln for ln in self.text().splitlines() if " leader=" in ln and " identity=" in ln]
        return bool(lines) and "leader=True" in lines[-1]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


class ReplicaWatch:
    """Records every spec.replicas a Deployment goes through, with arrival times."""

    def __init__(self, api: client.ApiClient, ns: str, name: str) -> None:
        self.seen: list[tuple[float, int]] = []
        self._watch = watch.Watch()
        self._apps = client.AppsV1Api(api)
        self.ns, self.name = ns, name
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "deployment watch did not start"

    def _run(self) -> None:
        listed = self._apps.list_namespaced_deployment(
            self.ns, field_selector=f"metadata.name={self.name}")
        self.seen.append((time.monotonic(), listed.items[0].spec.replicas))
        self._ready.set()
        stream = self._watch.stream(
            self._apps.list_namespaced_deployment, self.ns,
            field_selector=f"metadata.name={self.name}",
            resource_version=listed.metadata.resource_version, timeout_seconds=600)
        try:
            for event in stream:
                replicas = event["object"].spec.replicas
                if replicas != self.seen[-1][1]:
                    self.seen.append((time.monotonic(), replicas))
        except Exception:  # stopped by the test: the stream is cut
            return

    def stop(self) -> None:
        self._watch.stop()


class PodCostWatch:
    """Records the last pod-deletion-cost annotation each pod showed, before it went."""

    def __init__(self, api: client.ApiClient, ns: str, selector: str) -> None:
        self.costs: dict[str, int] = {}
        self._watch = watch.Watch()
        self._core = client.CoreV1Api(api)
        self.ns, self.selector = ns, selector
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._watch.stream(self._core.list_namespaced_pod, self.ns,
                                            label_selector=self.selector,
                                            timeout_seconds=600):
                pod = event["raw_object"]
                cost = cost_of(pod)
                if cost >= 0:
                    self.costs[pod["metadata"]["name"]] = cost
        except Exception:  # stopped by the test: the stream is cut
            return

    def stop(self) -> None:
        self._watch.stop()


def cost_of(pod: dict[str, Any]) -> int:
    annotations = pod["metadata"].get("annotations") or {}
    return int(annotations.get("controller.kubernetes.io/pod-deletion-cost", "-1"))
