"""The plain manifests in k8s/ work on kind: `kubectl apply -k`, pods ready, a round trip.

kubectl validates fields strictly on the server, so a manifest the API server would
not accept fails here. Cleanup deletes the namespace only: the WorkerPool CRD is
cluster-wide and other tests may be using it.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_helm_install import images  # noqa: F401 - the shared image fixture
from tests.plugins.kind import REPO_ROOT, KubeCluster

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow]

NAMESPACE = "qscale"  # fixed in the generated manifests


@pytest.mark.usefixtures("images")
def test_kustomize_redis_overlay_runs_a_task(kube_cluster: KubeCluster) -> None:
    existing = kube_cluster.kubectl("get", "namespace", NAMESPACE, check=False)
    if existing.returncode == 0:
        pytest.fail(f"namespace {NAMESPACE} already exists; delete it first", pytrace=False)
    try:
        kube_cluster.kubectl("apply", "-k", str(REPO_ROOT / "k8s" / "overlays" / "redis"))
        for workload in ("statefulset/qscale-redis", "deployment/qscale-worker-default",
                         "deployment/qscale-controller", "deployment/qscale-prometheus"):
            kube_cluster.kubectl("-n", NAMESPACE, "rollout", "status", workload,
                                 "--timeout=300s", timeout=330)
        result = kube_cluster.kubectl(
            "-n", NAMESPACE, "exec", "deploy/qscale-worker-default", "--", "python", "-c",
            "from worker.demo_tasks import add; print(add.delay(20, 22).get(timeout=60))",
            timeout=120)
        assert result.stdout.strip() == "42"
        pool = kube_cluster.kubectl_json("-n", NAMESPACE, "get", "workerpool", "qscale-default")
        assert pool["spec"]["targetRef"]["name"] == "qscale-worker-default"
    finally:
        kube_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=180s",
                             check=False, timeout=200)
