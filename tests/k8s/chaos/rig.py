"""The fault suite's cluster: a real pool per broker, controllers behind a Toxiproxy.

In one namespace: Redis and RabbitMQ (the release's own images), two worker
Deployments of the REAL worker image (one per broker; the Redis one selects its pods
with matchExpressions only) with the state-proxy sidecar, their WorkerPools, and a
second release's idle pool. On the host: port-forwards to both brokers (depth reads,
publishing, the task history), a Toxiproxy in front of the API server (every
controller talks to it) and of RabbitMQ's management API, and the controllers
themselves, authenticated as a ServiceAccount whose rights are controller/rbac.yaml's
(the pod list in its own RoleBinding, so it can be revoked and restored).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.k8s.chaos.pod_files import CHAOS_TASKS, STATE_PROXY, STATE_PROXY_PORT
from tests.k8s.harness import CRD, REPO, apply, wait_for
from tests.k8s.real_workers import TOKEN, port_forward
from tests.plugins.kind import KubeCluster
from tests.toxiproxy import Proxy, Toxiproxy

SA = "chaos-controller"
RABBIT_USER = "qscale"
QUEUE = "chaos"
POOLS = {"redis": "workers-redis", "rabbit": "workers-rabbit"}
MIN_REPLICAS, MAX_REPLICAS, CONCURRENCY = 1, 6, 2


def _broker_manifests(version: str) -> list[dict[str, Any]]:
    def broker(name: str, image: str, ports: list[int], env: dict[str, str],
               probe_port: int, command: list[str] | None = None) -> list[dict[str, Any]]:
        labels = {"app": name}
        container: dict[str, Any] = {
            "name": name, "image": image, "imagePullPolicy": "Never",
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "ports": [{"containerPort": p} for p in ports],
            "readinessProbe": {"tcpSocket": {"port": probe_port}, "periodSeconds": 1}}
        if command:
            container["command"] = command
        return [
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
             "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels},
                                   "spec": {"containers": [container]}}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
             "spec": {"selector": labels,
                      "ports": [{"name": f"p{p}", "port": p} for p in ports]}}]
    return [
        *broker("redis", f"qscale-redis:{version}", [6379], {}, 6379,
                ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]),
        *broker("rabbitmq", f"qscale-rabbitmq:{version}", [5672, 15672],
                {"RABBITMQ_DEFAULT_USER": RABBIT_USER, "RABBITMQ_DEFAULT_PASS": RABBIT_USER},
                15672)]


def _worker(name: str, broker_url: str, version: str, *, expressions: bool) -> dict[str, Any]:
    labels = {"app": name}
    selector = ({"matchExpressions": [{"key": "app", "operator": "In", "values": [name]}]}
                if expressions else {"matchLabels": labels})
    env = {"QSCALE_BROKER_URL": broker_url, "QSCALE_QUEUES": QUEUE,
           "QSCALE_IMPORTS": "chaos_tasks", "QSCALE_CONCURRENCY": str(CONCURRENCY),
           "QSCALE_DRAIN_SECONDS": "40", "PYTHONPATH": "/opt/chaos",
           "CHAOS_HISTORY_URL": "redis://redis:6379/1"}
    mount = [{"name": "chaos", "mountPath": "/opt/chaos"}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": MIN_REPLICAS, "selector": selector, "template": {
            "metadata": {"labels": labels},
            "spec": {
                "terminationGracePeriodSeconds": 60,
                "volumes": [{"name": "chaos", "configMap": {"name": "chaos"}}],
                "containers": [
                    {"name": "worker", "image": f"qscale:{version}", "imagePullPolicy": "Never",
                     "command": ["python", "-m", "worker", "run"],
                     "env": [*({"name": k, "value": v} for k, v in env.items()),
                             {"name": "QSCALE_POD_NAME",
                              "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                             {"name": "QSCALE_CONTROL_TOKEN", "valueFrom": {
                                 "secretKeyRef": {"name": "control", "key": "token"}}}],
                     "volumeMounts": mount, "ports": [{"containerPort": 8080}],
                     "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080},
                                        "periodSeconds": 1},
                     "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}},
                    {"name": "state-proxy", "image": f"qscale:{version}",
                     "imagePullPolicy": "Never", "command": ["python", "/opt/chaos/state_proxy.py"],
                     "env": [{"name": "FAULT_REDIS", "value": "redis://redis:6379/1"},
                             {"name": "FAULT_POOL", "value": name}],
                     "volumeMounts": mount, "ports": [{"containerPort": STATE_PROXY_PORT}],
                     "resources": {"requests": {"cpu": "5m", "memory": "32Mi"}}}]}}}}


def workerpool(name: str, target: str, url: str, controller: str, queue: str = QUEUE,
               **spec: Any) -> dict[str, Any]:
    body = {"queues": [queue], "broker": {"url": url}, "targetRef": {"name": target},
            "concurrency": CONCURRENCY, "mode": "queue", "minReplicas": MIN_REPLICAS,
            "maxReplicas": MAX_REPLICAS, "scaleDownWindowSeconds": 4,
            "podStatePort": STATE_PROXY_PORT, "drainDeadlineSeconds": 900, **spec}
    return {"apiVersion": "qscale.io/v1alpha1", "kind": "WorkerPool",
            "metadata": {"name": name, "labels": {"qscale.io/controller": controller}},
            "spec": body}


def controller_rbac(ns: str) -> list[dict[str, Any]]:
    """controller/rbac.yaml for this namespace, with the pod list in its own binding."""
    roles = [d for d in yaml.safe_load_all((REPO / "controller" / "rbac.yaml").read_text()) if d]
    main = next(r for r in roles if r["metadata"]["name"] == "qscale-controller")
    proxy = next(r for r in roles if r["metadata"]["name"] == "qscale-controller-pod-proxy")
    rules = []
    for canonical in main["rules"]:
        rule = dict(canonical)
        if rule["resources"] == ["leases"]:
            rule["resourceNames"] = ["chaos-a", "chaos-b"]
        if rule["resources"] == ["pods"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "list"]
        rules.append(rule)

    def role(name: str, role_rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": name}, "rules": role_rules},
                binding(name)]

    def binding(name: str) -> dict[str, Any]:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}]}
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}},
            *role("chaos-controller", rules), *role("chaos-pod-proxy", proxy["rules"]),
            *role("chaos-podlist", [{"apiGroups": [""], "resources": ["pods"],
                                     "verbs": ["list"]}])]


@dataclass
class ControllerProc:
    """One `python -m controller run` on the host, its log in a file."""

    identity: str
    name: str
    log: Path
    proc: subprocess.Popen[bytes]

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Rig:
    cluster: KubeCluster
    ns: str
    tmp: Path
    urls: dict[str, str] = field(default_factory=dict)  # host-side broker URLs per pool
    history_url: str = ""
    api: Proxy | None = None
    mgmt: Proxy | None = None
    kubeconfig: Path | None = None
    controllers: list[ControllerProc] = field(default_factory=list)

    def start_controller(self, name: str, identity: str) -> ControllerProc:
        assert self.kubeconfig is not None and self.mgmt is not None
        log = self.tmp / f"controller-{identity}.log"
        env = dict(os.environ, **{
            "QSCALE_CONTROLLER_NAME": name, "QSCALE_CONTROLLER_NAMESPACE": self.ns,
            "QSCALE_CONTROLLER_LEASE_NAME": name, "QSCALE_CONTROLLER_LEASE_NAMESPACE": self.ns,
            "QSCALE_CONTROLLER_LEASE_DURATION_SECONDS": "6",
            "QSCALE_CONTROLLER_LEASE_RENEW_SECONDS": "2",
            "QSCALE_CONTROLLER_IDENTITY": identity, "QSCALE_CONTROLLER_HTTP_PORT": "0",
            "QSCALE_CONTROLLER_POD_STATE_ACCESS": "apiserver-proxy",
            "QSCALE_CONTROLLER_POD_STATE_TIMEOUT_SECONDS": "3",
            "QSCALE_CONTROL_TOKEN": TOKEN,
            "QSCALE_RABBITMQ_API": f"http://{RABBIT_USER}:{RABBIT_USER}@{self.mgmt.address}"})
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "controller", "run", "--kubeconfig",
                 str(self.kubeconfig)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        ctl = ControllerProc(identity, name, log, proc)
        self.controllers.append(ctl)
        return ctl

    def set_state_fault(self, mode: str) -> None:
        import redis
        client = redis.Redis.from_url(self.history_url, socket_timeout=5)
        for target in POOLS.values():
            key = f"chaos:state-fault:{target}"
            client.set(key, mode) if mode else client.delete(key)

    def revoke_pod_list(self) -> None:
        self.cluster.kubectl("-n", self.ns, "delete", "rolebinding", "chaos-podlist")

    def restore_pod_list(self) -> None:
        apply(self.cluster, self.ns, controller_rbac(self.ns)[-1])


def _sa_kubeconfig(cluster: KubeCluster, ns: str, server: str, path: Path) -> Path:
    token = cluster.kubectl("-n", ns, "create", "token", SA, "--duration=2h").stdout.strip()
    raw = cluster.kubectl_json("config", "view", "--raw", "--minify")
    entry = dict(raw["clusters"][0]["cluster"], server=server)
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kind", "cluster": entry}],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": SA, "context": {"cluster": "kind", "user": SA, "namespace": ns}}],
        "current-context": SA}))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def chaos_rig(cluster: KubeCluster, ns: str, version: str, tmp: Path) -> Iterator[Rig]:
    """Everything up and the pools at their minimum; torn down (processes) afterwards."""
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/workerpools.qscale.io")
    cluster.kubectl("-n", ns, "create", "secret", "generic", "control",
                    f"--from-literal=token={TOKEN}")
    cluster.kubectl("-n", ns, "create", "configmap", "chaos",
                    f"--from-literal=chaos_tasks.py={CHAOS_TASKS}",
                    f"--from-literal=state_proxy.py={STATE_PROXY}")
    apply(cluster, ns, *_broker_manifests(version), *controller_rbac(ns),
          *({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": n}, "spec": {}} for n in ("chaos-a", "chaos-b")))
    for name in ("redis", "rabbitmq"):
        cluster.kubectl("-n", ns, "rollout", "status", f"deployment/{name}", "--timeout=180s",
                        timeout=200)
    rig = Rig(cluster, ns, tmp)
    server = urlsplit(cluster.kubectl_json("config", "view", "--raw", "--minify")
                      ["clusters"][0]["cluster"]["server"])
    with contextlib.ExitStack() as stack:
        redis_port = stack.enter_context(port_forward(cluster, ns, "svc/redis", 6379))
        amqp_port = stack.enter_context(port_forward(cluster, ns, "svc/rabbitmq", 5672))
        mgmt_port = stack.enter_context(port_forward(cluster, ns, "svc/rabbitmq", 15672))
        toxi = Toxiproxy.start()
        stack.callback(toxi.stop)
        rig.api = toxi.proxy("apiserver", f"{server.hostname}:{server.port}")
        rig.mgmt = toxi.proxy("rabbit-mgmt", f"127.0.0.1:{mgmt_port}")
        rig.urls = {"redis": f"redis://127.0.0.1:{redis_port}/0",
                    "rabbit": f"amqp://{RABBIT_USER}:{RABBIT_USER}@127.0.0.1:{amqp_port}//"}
        rig.history_url = f"redis://127.0.0.1:{redis_port}/1"
        rig.kubeconfig = _sa_kubeconfig(cluster, ns, f"https://127.0.0.1:{rig.api.port}",
                                        tmp / "controller-kubeconfig")
        apply(cluster, ns,
              _worker(POOLS["redis"], "redis://redis:6379/0", version, expressions=True),
              _worker(POOLS["rabbit"], f"amqp://{RABBIT_USER}:{RABBIT_USER}@rabbitmq:5672//",
                      version, expressions=False),
              {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sleepers-b"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "sleepers-b"}},
                        "template": {"metadata": {"labels": {"app": "sleepers-b"}},
                                     "spec": {"terminationGracePeriodSeconds": 0,
                                              "containers": [{
                                                  "name": "s", "image": f"qscale:{version}",
                                                  "imagePullPolicy": "Never",
                                                  "command": ["sleep", "infinity"]}]}}}})
        for target in POOLS.values():
            cluster.kubectl("-n", ns, "rollout", "status", f"deployment/{target}",
                            "--timeout=240s", timeout=260)
        apply(cluster, ns,
              workerpool("pool-redis", POOLS["redis"], rig.urls["redis"], "chaos-a"),
              workerpool("pool-rabbit", POOLS["rabbit"], rig.urls["rabbit"], "chaos-a"),
              workerpool("pool-b", "sleepers-b", rig.urls["redis"], "chaos-b", queue="chaos-b",
                         podStatePort=0))
        try:
            yield rig
        finally:
            for ctl in rig.controllers:
                ctl.kill(signal.SIGTERM)


def unique_suffix() -> str:
    return uuid.uuid4().hex[:6]


def wait_leader(rig: Rig, name: str, timeout: float = 60) -> ControllerProc:
    """The controller of release `name` that holds its Lease now."""
    def holder() -> ControllerProc | None:
        lease = rig.cluster.kubectl_json("-n", rig.ns, "get", "lease", name)
        who = (lease.get("spec") or {}).get("holderIdentity")
        return next((c for c in rig.controllers if c.identity == who and c.proc.poll() is None),
                    None)
    found: ControllerProc = wait_for(f"a leader of {name}", holder, timeout)
    return found
