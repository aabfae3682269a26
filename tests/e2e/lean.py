"""Small throwaway releases for the lifecycle tests (reinstall, upgrade) on kind.

Each lives in its own uniquely named namespace, so concurrent runs on the shared
cluster never meet. Only the broker and the workers run unless a test asks for more:
no Prometheus, tiny requests, one child process per worker, so an install is quick.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.plugins.kind import REPO_ROOT, KubeCluster

CHART = REPO_ROOT / "helm" / "qscale"
SMALL = {"requests": {"cpu": "20m", "memory": "64Mi"}}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def lean_values(broker: str, image: str, **extra: Any) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    values = {
        "broker": {"type": broker},
        "image": {"repository": repository, "tag": tag},
        "worker": {"concurrency": 1, "drainSeconds": 2, "terminationGraceMarginSeconds": 5,
                   "imports": ["qscale_e2e.tasks"],
                   "resources": {**SMALL, "limits": {"memory": "256Mi"}},
                   "startupProbe": {"periodSeconds": 1, "failureThreshold": 90}},
        "controller": {"enabled": False, "resources": {**SMALL, "limits": {"memory": "256Mi"}}},
        "monitoring": {"prometheus": {"enabled": False}},
        "redis": {"persistence": {"size": "64Mi"},
                  "resources": {**SMALL, "limits": {"memory": "128Mi"}}},
        "rabbitmq": {"persistence": {"size": "128Mi"},
                     "resources": {"requests": {"cpu": "50m", "memory": "256Mi"},
                                   "limits": {"memory": "512Mi"}}},
    }
    return deep_merge(values, extra)


@dataclass
class LeanRelease:
    """One release in its own namespace: install/upgrade/uninstall and exec in a worker."""

    cluster: KubeCluster
    prefix: str
    name: str = "lean"
    namespace: str = ""
    values_dir: Path = field(default_factory=lambda: REPO_ROOT / "artifacts" / "e2e")

    def __post_init__(self) -> None:
        if not self.namespace:
            self.namespace = f"{self.prefix}-{uuid.uuid4().hex[:6]}"

    @property
    def fullname(self) -> str:
        return f"{self.name}-qscale"

    def create_namespace(self) -> None:
        self.cluster.kubectl("create", "namespace", self.namespace)

    def delete_namespace(self) -> None:
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false",
                             check=False)

    def _values_file(self, values: dict[str, Any], tag: str) -> str:
        path = self.values_dir / f"{self.namespace}-{tag}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2))
        return str(path)

    def helm(self, verb: str, values: dict[str, Any], *flags: str, chart: Path = CHART,
             timeout: str = "5m", check: bool = True) -> subprocess.CompletedProcess[str]:
        """`helm install|upgrade NAME CHART -n NS -f values --wait` (values as JSON)."""
        return self.cluster.helm(verb, self.name, str(chart), "-n", self.namespace,
                                 "-f", self._values_file(values, verb), "--wait",
                                 "--timeout", timeout, *flags, timeout=420, check=check)

    def uninstall(self) -> None:
        self.cluster.helm("uninstall", self.name, "-n", self.namespace, "--wait", timeout=300)

    def kubectl(self, *args: str, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, timeout=timeout, check=check)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def exists(self, kind: str, name: str) -> bool:
        return self.kubectl("get", kind, name, check=False).returncode == 0

    def worker_exec(self, argv: Sequence[str], pool: str = "default", timeout: float = 150) -> str:
        return self.kubectl("exec", f"deploy/{self.fullname}-worker-{pool}", "--", *argv,
                            timeout=timeout).stdout

    def run_task(self, code: str, pool: str = "default") -> str:
        """Python `code` in a worker pod, its last line of output (a task's result)."""
        out = self.worker_exec(["python", "-c", code], pool=pool)
        return out.strip().splitlines()[-1] if out.strip() else ""

    def roundtrip(self, queue: str = "default") -> str:
        return self.run_task("from worker.demo_tasks import add; "
                             f"print(add.apply_async((2, 3), queue={queue!r}).get(timeout=90))")

    def secret_data(self, name: str) -> dict[str, str] | None:
        got = self.kubectl("get", "secret", name, "-o", "json", check=False)
        if got.returncode != 0:
            return None
        data: dict[str, str] = json.loads(got.stdout)["data"]
        return data
