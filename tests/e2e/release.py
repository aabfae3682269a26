"""One qscale Helm release per broker on the kind cluster, plus a probe pod beside it.

Each broker gets its own namespace and release, installed with `helm install --wait`
from the repo's chart with small test values (short scale-down window, few
replicas, tiny requests so everything fits the single 2-CPU node). The probe pod
runs the e2e image with exactly the workers' broker environment; the tests drive
the in-cluster broker through it (`kubectl exec ... python -m qscale_e2e`), so a
broker restart never breaks their connection the way a port-forward would.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tests.e2e.lean import deep_merge
from tests.plugins.kind import REPO_ROOT, KubeCluster

CHART = REPO_ROOT / "helm" / "qscale"
RELEASE_NAME = "e2e"
FULLNAME = f"{RELEASE_NAME}-qscale"
POOL = "default"
QUEUE = "default"
CONCURRENCY = 4
MIN_REPLICAS = 1
MAX_REPLICAS = 5
SCALE_DOWN_WINDOW_SECONDS = 15
DRAIN_SECONDS = 10
PROBE_POD = "e2e-probe"
INSTALL_TIMEOUT = "6m"

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], *, timeout: float, interval: float = 2.0,
               what: str) -> T:
    """Poll `check` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def test_values(broker: str, image: str) -> dict[str, Any]:
    """Chart values for the e2e releases (validated by the chart's schema)."""
    repository, tag = image.rsplit(":", 1)
    small = {"requests": {"cpu": "20m", "memory": "64Mi"}}
    return {
        "broker": {"type": broker},
        "image": {"repository": repository, "tag": tag},
        "worker": {
            "concurrency": CONCURRENCY,
            "drainSeconds": DRAIN_SECONDS,
            "terminationGraceMarginSeconds": 5,
            "imports": ["qscale_e2e.tasks"],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                          "limits": {"memory": "384Mi"}},
        },
        "pools": [{"name": POOL, "queues": [QUEUE]}],
        "autoscaling": {
            "minReplicas": MIN_REPLICAS, "maxReplicas": MAX_REPLICAS,
            "scaleDownWindowSeconds": SCALE_DOWN_WINDOW_SECONDS, "pollIntervalSeconds": 1,
        },
        "controller": {"resources": {**small, "limits": {"memory": "256Mi"}}},
        "redis": {"persistence": {"size": "256Mi"},
                  "resources": {**small, "limits": {"memory": "256Mi"}}},
        "rabbitmq": {"persistence": {"size": "512Mi"},
                     "resources": {"requests": {"cpu": "50m", "memory": "256Mi"},
                                   "limits": {"memory": "512Mi"}}},
        "monitoring": {"prometheus": {"scrapeInterval": "2s",
                                      "resources": {**small, "limits": {"memory": "512Mi"}}}},
        "tests": {"timeoutSeconds": 90},
    }


def pod_manifest(name: str, image: str, command: list[str], env: list[dict[str, Any]],
                 labels: dict[str, str], *, container: str = "main",
                 memory_limit: str = "256Mi", restart_policy: str = "Always") -> dict[str, Any]:
    """A bare pod of the e2e image, as locked down as the chart's own pods."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": restart_policy,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": container, "image": image, "imagePullPolicy": "IfNotPresent",
                "command": command, "env": env,
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"},
                              "limits": {"memory": memory_limit}},
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


@dataclass
class Release:
    """The release of one broker: names, install/uninstall, probe and pod helpers."""

    cluster: KubeCluster
    broker: str
    image: str
    namespace: str
    installed: bool = False
    # Chart values merged over test_values() (dicts merge key by key, the rest replaces).
    overrides: dict[str, Any] = field(default_factory=dict)
    probe_node_selector: dict[str, str] = field(default_factory=dict)

    worker_deployment: str = f"{FULLNAME}-worker-{POOL}"
    workerpool: str = f"{FULLNAME}-{POOL}"
    controller_deployment: str = f"{FULLNAME}-controller"
    prometheus_service: str = f"{FULLNAME}-prometheus"

    @property
    def broker_pod(self) -> str:
        return f"{FULLNAME}-{self.broker}-0"

    @property
    def values_file(self) -> str:
        path = REPO_ROOT / "artifacts" / "e2e" / f"values-{self.namespace}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        values = deep_merge(test_values(self.broker, self.image), self.overrides)
        path.write_text(json.dumps(values, indent=2))
        return str(path)

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return self.cluster.kubectl("-n", self.namespace, *args, timeout=timeout,
                                    check=check).stdout

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    # -- lifecycle --

    def install(self) -> None:
        """Fresh namespace (old data and PVCs gone), then `helm install --wait`."""
        self.cluster.kubectl("delete", "namespace", self.namespace, "--ignore-not-found",
                             "--wait=true", "--timeout=300s", timeout=330)
        self.cluster.kubectl("create", "namespace", self.namespace)
        self.cluster.helm("install", RELEASE_NAME, str(CHART), "-n", self.namespace,
                          "-f", self.values_file, "--wait", "--timeout", INSTALL_TIMEOUT,
                          timeout=420)
        self.installed = True
        self.start_probe()

    def teardown(self, keep: bool) -> None:
        if keep:
            return
        if self.installed:
            self.cluster.helm("uninstall", RELEASE_NAME, "-n", self.namespace, "--wait",
                              check=False, timeout=300)
        self.cluster.kubectl("delete", "namespace", self.namespace, "--ignore-not-found",
                             "--wait=false", check=False)

    def start_probe(self) -> None:
        """A pod with the e2e image and the workers' broker environment, idle until exec'd."""
        deploy = self.get_json("deployment", self.worker_deployment)
        env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        pod = pod_manifest(PROBE_POD, self.image, ["sleep", "infinity"], env, {
            "app.kubernetes.io/instance": RELEASE_NAME,
            "app.kubernetes.io/component": "e2e-probe",
            "qscale.io/broker-client": "true"}, container="probe", memory_limit="512Mi")
        if self.probe_node_selector:
            pod["spec"]["nodeSelector"] = self.probe_node_selector
        self.cluster.apply(json.dumps(pod), namespace=self.namespace)
        self.kubectl("wait", "--for=condition=Ready", f"pod/{PROBE_POD}", "--timeout=120s",
                     timeout=150)

    def delete_probe(self) -> None:
        self.kubectl("delete", "pod", PROBE_POD, "--ignore-not-found", "--wait=true",
                     timeout=60)

    # -- talking to the broker through the probe pod --

    def exec_probe(self, *argv: str, timeout: float = 180) -> str:
        return self.kubectl("exec", PROBE_POD, "--", *argv, timeout=timeout)

    def probe(self, *argv: str, timeout: float = 180) -> Any:
        """Run `python -m qscale_e2e ARGV` in the probe pod; its JSON answer."""
        out = self.exec_probe("python", "-m", "qscale_e2e", *argv, timeout=timeout)
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AssertionError(f"probe {argv[0]}: no JSON answer in {out[-500:]!r}") from None

    def enqueue(self, run: str, count: int, seconds: float) -> None:
        began = time.monotonic()
        sent = self.probe("enqueue", run, str(count), str(seconds), "--queue", QUEUE)
        print(f"[{self.broker}] enqueued {count} x {seconds}s ({run}): publish "
              f"{sent['seconds']}s, exec {time.monotonic() - began:.1f}s")

    def verify(self, run: str, events: bool = False) -> dict[str, Any]:
        report: dict[str, Any] = self.probe("verify", run, *(["--events"] if events else []))
        return report

    def wait_all_finished(self, run: str, timeout: float) -> dict[str, Any]:
        """Poll the event log until every expected id finished at least once."""
        def done() -> dict[str, Any] | None:
            try:
                report = self.verify(run)
            except (AssertionError, subprocess.TimeoutExpired):  # Redis may be restarting
                return None
            return report if report["missing"] == 0 else None
        try:
            return wait_until(done, timeout=timeout, interval=5, what=f"run {run} to finish")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last report: {self.verify(run)}") from None

    # -- Kubernetes state --

    def deployment(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json("deployment", self.worker_deployment)
        return result

    def worker_pods(self) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = self.get_json(
            "pods", "-l", f"app.kubernetes.io/instance={RELEASE_NAME},"
            f"app.kubernetes.io/component=worker")["items"]
        return pods

    def running_worker_pods(self) -> list[str]:
        return [p["metadata"]["name"] for p in self.worker_pods()
                if p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")]

    def wait_replicas(self, count: int, timeout: float) -> None:
        """Wait until the Deployment asks for `count` and exactly that many pods are left."""
        def settled() -> bool:
            spec = self.deployment()["spec"].get("replicas")
            pods = [p for p in self.worker_pods() if p["status"].get("phase") != "Succeeded"]
            return spec == count and len(pods) == count
        wait_until(settled, timeout=timeout, interval=2,
                   what=f"{self.worker_deployment} back to {count} replica(s)")

    def events(self, reason: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get_json(
            "events", "--field-selector", f"reason={reason}")["items"]
        return items
