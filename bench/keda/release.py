"""One Helm release of the chart per broker, holding one worker pool per scaler.

Every pool is rendered by the same chart template from the same `worker` values, so the
pool shape (image, concurrency, resources, probes, drain and grace periods) is identical
for every scaler; only who scales it differs. KEDA's pools have `autoscaling.enabled:
false` (no WorkerPool, so the qscale controller leaves them alone, and it refuses a
Deployment an HPA scales anyway); qscale's pools get their WorkerPool settings.

The host reaches the in-cluster brokers through NodePort Services on the kind node's
address (the producer, the depth sampler and the event reader): no port-forward in the
measurement path. The chart's NetworkPolicy is off so KEDA's operator (namespace keda)
and the host may reach the broker; the node's bridge CNI does not enforce policies anyway.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.keda.kube import REPO, Kube
from bench.keda.scalers import (
    Scaler,
    qscale_autoscaling,
    rabbitmq_http_auth,
    scaled_object,
    trigger_auth,
)

RELEASE = "bench"
PASSWORD = "qscaleBench0"   # a throwaway cluster's broker; letters and digits (it is in URLs)
RABBIT_USER = "qscale"


@dataclass(frozen=True)
class PoolShape:
    """What every scaler's pool shares."""

    concurrency: int = 4
    max_replicas: int = 10
    cpu_request: str = "10m"       # 4 pools x 10 pods must fit a 2-CPU node's allocatable
    memory_request: str = "128Mi"
    memory_limit: str = "512Mi"


def values(broker: str, image: str, scalers: Sequence[Scaler], shape: PoolShape) -> dict[str, Any]:
    """Chart values: the chart's defaults except the pool shape and the bench's plumbing."""
    repository, tag = image.rsplit(":", 1)
    pools: list[dict[str, Any]] = []
    for s in scalers:
        pool: dict[str, Any] = {"name": s.name, "queues": [s.name]}
        if s.kind == "keda":
            pool.update(replicas=0, autoscaling={"enabled": False})
        elif s.options:
            pool["autoscaling"] = qscale_autoscaling(s)
        pools.append(pool)
    return {
        "broker": {"type": broker},
        "image": {"repository": repository, "tag": tag},
        "worker": {
            "concurrency": shape.concurrency,
            "imports": ["qscale_bench.tasks"],
            "demoTasks": False,
            "resources": {"requests": {"cpu": shape.cpu_request,
                                       "memory": shape.memory_request},
                          "limits": {"memory": shape.memory_limit}},
        },
        "pools": pools,
        "autoscaling": {"minReplicas": 0, "maxReplicas": shape.max_replicas},
        # No volumes: nothing here needs to survive a broker restart, and claims on the
        # shared node's disk would only add start-up noise.
        "redis": {"auth": {"password": PASSWORD}, "persistence": {"enabled": False}},
        "rabbitmq": {"auth": {"username": RABBIT_USER, "password": PASSWORD},
                     "persistence": {"enabled": False}},
        "monitoring": {"prometheus": {"enabled": False}},
        "networkPolicy": {"enabled": False},
    }


def _node_port(name: str, release: str, component: str, ports: dict[str, int]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": "NodePort",
                     "selector": {"app.kubernetes.io/name": "qscale",
                                  "app.kubernetes.io/instance": release,
                                  "app.kubernetes.io/component": component},
                     "ports": [{"name": n, "port": p, "targetPort": p}
                               for n, p in ports.items()]}}


@dataclass
class Release:
    """The release of one broker, and the host's ways into it."""

    kube: Kube
    broker: str
    scalers: tuple[Scaler, ...]
    shape: PoolShape
    name: str = RELEASE
    ns: str = ""
    broker_url: str = ""
    results_url: str = ""
    management_url: str = ""   # RabbitMQ only

    def __post_init__(self) -> None:
        self.ns = self.ns or f"qscale-bench-{self.broker}"

    @property
    def fullname(self) -> str:
        return f"{self.name}-qscale"

    def deployment(self, pool: str) -> str:
        return f"{self.fullname}-worker-{pool}"

    def install(self, image: str) -> None:
        """A fresh release, and the NodePorts; waits until it runs.

        A kept cluster (--keep-cluster) still holds the last run's release: upgrading it
        would carry its queues' contents into this run, and fails outright once the chart
        changed an immutable field. So an earlier release and its namespace go first."""
        if self.kube.kubectl("get", "namespace", self.ns, "--ignore-not-found", "-o", "name"):
            self.kube.helm("uninstall", self.name, "-n", self.ns, "--ignore-not-found",
                           "--wait", "--timeout", "5m", timeout=330)
            self.kube.kubectl("delete", "namespace", self.ns, "--wait=true", timeout=600)
        self.kube.kubectl("create", "namespace", self.ns)
        path = REPO / "artifacts" / "bench-keda" / f"values-{self.ns}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values(self.broker, image, self.scalers, self.shape),
                                   indent=2))
        self.kube.helm("upgrade", "--install", self.name, str(REPO / "helm" / "qscale"),
                       "-n", self.ns, "-f", str(path), "--wait", "--timeout", "10m",
                       timeout=700)
        services = [_node_port("bench-redis-np", self.name, "redis", {"redis": 6379})]
        if self.broker == "rabbitmq":
            services.append(_node_port("bench-rabbitmq-np", self.name, "rabbitmq",
                                       {"amqp": 5672, "management": 15672}))
        self.kube.apply(services, self.ns)
        ip = self.kube.node_ip()
        ports = {f"{s['metadata']['name']}/{p['name']}": p["nodePort"]
                 for s in (self.kube.get("-n", self.ns, "service", x["metadata"]["name"])
                           for x in services) for p in s["spec"]["ports"]}
        self.results_url = f"redis://:{PASSWORD}@{ip}:{ports['bench-redis-np/redis']}/0"
        if self.broker == "redis":
            self.broker_url = self.results_url
        else:
            self.broker_url = (f"amqp://{RABBIT_USER}:{PASSWORD}@{ip}:"
                               f"{ports['bench-rabbitmq-np/amqp']}//")
            self.management_url = (f"http://{RABBIT_USER}:{PASSWORD}@{ip}:"
                                   f"{ports['bench-rabbitmq-np/management']}")

    def broker_host(self) -> str:
        """The broker's in-cluster name (what KEDA's operator connects to)."""
        return f"{self.fullname}-{self.broker}.{self.ns}.svc"

    def keda_objects(self) -> list[dict[str, Any]]:
        secret = f"{self.fullname}-{self.broker}"
        docs = [trigger_auth(self.broker, secret)]
        if self.broker == "rabbitmq":
            docs.append(rabbitmq_http_auth(secret))
        docs += [scaled_object(s, broker=self.broker, deployment=self.deployment(s.name),
                               broker_host=self.broker_host(),
                               concurrency=self.shape.concurrency,
                               max_replicas=self.shape.max_replicas)
                 for s in self.scalers if s.kind == "keda"]
        return docs

    # -- between traces ----------------------------------------------------------

    def reset(self, timeout: float = 900) -> None:
        """Every pool at zero pods, KEDA's objects gone (a fresh HPA per trace)."""
        self.kube.kubectl("-n", self.ns, "delete", "scaledobject", "-l", "qscale.io/bench=keda",
                          "--ignore-not-found", "--wait=true", timeout=180, check=False)
        for s in self.scalers:
            if s.kind == "keda":
                self.kube.kubectl("-n", self.ns, "scale", "deployment",
                                  self.deployment(s.name), "--replicas=0")
        deadline = time.monotonic() + timeout
        while True:
            pods = self.kube.get("-n", self.ns, "pods", "-l", "qscale.io/pool")["items"]
            if not pods:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pods)} worker pods still there after {timeout:.0f} s")
            time.sleep(3)

    def start_keda(self) -> None:
        """Apply the ScaledObjects and wait until KEDA made their HPAs."""
        docs = self.keda_objects()
        if len(docs) <= 1 + (self.broker == "rabbitmq"):
            return
        self.kube.apply(docs, self.ns)
        names = [s.name for s in self.scalers if s.kind == "keda"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            hpas = {h["metadata"]["name"] for h in
                    self.kube.get("-n", self.ns, "hpa")["items"]}
            if all(f"keda-hpa-{n}" in hpas for n in names):
                return
            time.sleep(2)
        raise RuntimeError(f"KEDA made no HPA for {names} within 180 s")
