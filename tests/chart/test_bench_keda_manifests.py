"""The real-KEDA benchmark's objects, checked without building KEDA (the cold CI run cannot
afford that build): KEDA's release manifests and the ScaledObjects and TriggerAuthentications
the bench applies validate (kubeconform -strict) against Kubernetes 1.34 and KEDA's own CRD
schemas from the same release, and the bench's chart values render one pool shape for
every scaler."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.keda.release import PoolShape, values
from bench.keda.scalers import DEFAULT_SCALERS, parse_scaler
from tests.chart.conftest import REPO_ROOT, Render

CACHE = Path(os.environ.get("QSCALE_CACHE", "/var/cache/qscale"))
KUBECONFORM = CACHE / "bin" / "kubeconform"
CRD_FILE = REPO_ROOT / "helm" / "qscale" / "files" / "crds" / "workerpool.yaml"
# hack/chart-check.sh's schemas: Kubernetes 1.34.4 plus this checkout's WorkerPool CRD.
K8S_SCHEMAS = CACHE / "kubeconform-schemas" / (
    "v1.34.4-crd-" + hashlib.sha256(CRD_FILE.read_bytes()).hexdigest()[:12])
SWAGGER = CACHE / "go" / "mod" / "k8s.io" / "kubernetes@v1.34.4" / "api" / "openapi-spec" / \
    "swagger.json"
SWEEP = ("k5=keda:poll=5,cooldown=60,down_window=0,length=2",
         "q1=qscale:target_wait=60,batch=20,down_window=5,mode=latency")


def run(*argv: str | Path, input: str | None = None, timeout: float = 600) -> str:
    proc = subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=REPO_ROOT)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout[-2000:]}" \
                                 f"\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def keda_yaml() -> Path:
    """KEDA's release manifests (hack/keda.sh manifests: the module zip, no build)."""
    return Path(run("bash", "hack/keda.sh", "manifests").strip().splitlines()[-1])


@pytest.fixture(scope="module")
def schemas(keda_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Schema locations: Kubernetes 1.34 (chart-check's, or made here) and KEDA's CRDs."""
    out = tmp_path_factory.mktemp("keda-schemas")
    empty = out / "empty.json"
    empty.write_text('{"definitions": {}}')
    locations = []
    if (K8S_SCHEMAS / "deployment-apps-v1.json").exists():
        run(sys.executable, "hack/kubeconform-schemas.py", "--openapi", empty,
            "--crd", keda_yaml, "--out", out / "keda")
        locations.append(str(K8S_SCHEMAS / "{{ .ResourceKind }}{{ .KindSuffix }}.json"))
    else:
        assert SWAGGER.exists(), f"no Kubernetes schemas: neither {K8S_SCHEMAS} nor {SWAGGER}"
        run(sys.executable, "hack/kubeconform-schemas.py", "--openapi", SWAGGER,
            "--crd", keda_yaml, "--crd", CRD_FILE, "--out", out / "keda")
    locations.append(str(out / "keda" / "{{ .ResourceKind }}{{ .KindSuffix }}.json"))
    return locations


def kubeconform(text: str, schemas: list[str]) -> str:
    args: list[str | Path] = [KUBECONFORM, "-strict", "-summary", "-kubernetes-version",
                              "1.34.4"]
    for location in schemas:
        args += ["-schema-location", location]
    return run(*args, input=text)


def test_keda_release_manifests_are_complete_and_valid(keda_yaml: Path,
                                                      schemas: list[str]) -> None:
    docs = [d for d in yaml.safe_load_all(keda_yaml.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "keda-operator") in kinds
    assert ("Deployment", "keda-metrics-apiserver") in kinds
    assert ("APIService", "v1beta1.external.metrics.k8s.io") in kinds
    assert ("CustomResourceDefinition", "scaledobjects.keda.sh") in kinds
    assert not any(k == "ValidatingWebhookConfiguration" for k, _ in kinds)  # minimal
    operator = next(d for d in docs if d["metadata"]["name"] == "keda-operator"
                    and d["kind"] == "Deployment")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("qscale/keda:")       # built here, not pulled
    assert "--enable-cert-rotation=true" in container["args"]     # KEDA makes its certs
    assert "--enable-webhook-patching=false" in container["args"]
    summary = kubeconform(keda_yaml.read_text(), schemas)
    assert "Invalid: 0, Errors: 0" in summary


def test_the_objects_the_bench_applies_are_valid(schemas: list[str]) -> None:
    args = ["-m", "bench.keda", "manifests"]
    for scaler in (*DEFAULT_SCALERS, *SWEEP):
        args += ["--scaler", scaler]
    text = run(sys.executable, *args)
    kinds = [d["kind"] for d in yaml.safe_load_all(text) if d]
    assert kinds.count("ScaledObject") == 2 * 3 and kinds.count("TriggerAuthentication") == 3
    assert "protocol: http" in text and "listName: qscale:q:keda-default:ready" in text
    summary = kubeconform(text, schemas)
    assert "Invalid: 0, Errors: 0, Skipped: 0" in summary


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_every_scaler_gets_the_same_pool(render: Render, broker: str, tmp_path: Path,
                                         schemas: list[str]) -> None:
    scalers = [parse_scaler(s) for s in (*DEFAULT_SCALERS, *SWEEP)]
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values(broker, "qscale-bench:x", scalers, PoolShape())))
    docs = render(values=[path])
    workers = {d["metadata"]["labels"]["qscale.io/pool"]: d for d in docs
               if d["kind"] == "Deployment" and d["metadata"]["name"].startswith(
                   "qscale-worker-")}
    assert set(workers) == {s.name for s in scalers}

    def shape(d: dict[str, Any]) -> dict[str, Any]:
        spec = json.loads(json.dumps(d["spec"]["template"]["spec"]))
        c = spec["containers"][0]
        # What may differ: the queue, and the control token qscale's controller cordons with.
        c["env"] = [e for e in c["env"] if e["name"] not in ("QSCALE_QUEUES",
                                                             "QSCALE_CONTROL_TOKEN")]
        for sel in spec.get("topologySpreadConstraints", []):
            sel["labelSelector"]["matchLabels"].pop("qscale.io/pool", None)
        return spec

    shapes = {name: shape(d) for name, d in workers.items()}
    first = next(iter(shapes.values()))
    assert all(s == first for s in shapes.values())
    container = first["containers"][0]
    assert {"name": "QSCALE_CONCURRENCY", "value": "4"} in container["env"]
    pools = {d["spec"]["targetRef"]["name"] for d in docs if d["kind"] == "WorkerPool"}
    assert pools == {f"qscale-worker-{s.name}" for s in scalers if s.kind == "qscale"}
    keda_pool = workers["keda-default"]
    assert keda_pool["spec"]["replicas"] == 0          # KEDA owns it from zero
    best = next(d for d in docs if d["kind"] == "WorkerPool"
                and d["spec"]["targetRef"]["name"] == "qscale-worker-qscale-best")
    assert best["spec"]["minReplicas"] == 0 and best["spec"]["maxReplicas"] == 10
    summary = kubeconform(yaml.safe_dump_all(docs), schemas)
    assert "Invalid: 0, Errors: 0" in summary
