"""controller/rbac.yaml grants exactly what the controller needs, checked by the API server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.kind import KubeCluster

pytestmark = pytest.mark.k8s

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "controller" / "rbac.yaml"
CRD = REPO / "helm" / "qscale" / "files" / "crds" / "workerpool.yaml"

ALLOWED = [  # the calls the code makes (tests/chart/rbac_derive.py derives the same list)
    ("get", "deployments.apps"), ("list", "deployments.apps"), ("watch", "deployments.apps"),
    ("patch", "deployments.apps --subresource=scale"),
    ("list", "pods"), ("patch", "pods"),
    ("list", "horizontalpodautoscalers.autoscaling"),
    ("get", "leases.coordination.k8s.io/qscale-controller"),
    ("update", "leases.coordination.k8s.io/qscale-controller"),
    ("list", "workerpools.qscale.io"), ("watch", "workerpools.qscale.io"),
    ("patch", "workerpools.qscale.io --subresource=status"),
    ("create", "events"), ("patch", "events"),
    ("get", "secrets/qscale-broker"),
]

FORBIDDEN = [
    ("delete", "deployments.apps"), ("patch", "deployments.apps"), ("create", "pods"),
    ("delete", "pods"), ("watch", "pods"), ("list", "secrets"), ("get", "secrets/other-secret"),
    ("get", "deployments.apps --subresource=scale"),
    ("update", "deployments.apps --subresource=scale"),
    ("create", "leases.coordination.k8s.io"), ("get", "leases.coordination.k8s.io/other"),
    ("update", "leases.coordination.k8s.io/other"), ("delete", "leases.coordination.k8s.io"),
    ("get", "workerpools.qscale.io"), ("patch", "workerpools.qscale.io"),
    ("delete", "workerpools.qscale.io"),
    ("get", "workerpools.qscale.io --subresource=status"),
    ("update", "workerpools.qscale.io --subresource=status"),
    ("create", "events.events.k8s.io"), ("watch", "horizontalpodautoscalers.autoscaling"),
    # Out-of-cluster extra, only with the separate qscale-controller-pod-proxy Role:
    ("get", "pods --subresource=proxy"), ("create", "pods --subresource=proxy"),
]


@pytest.fixture(scope="module")
def bound_sa(kube_cluster: KubeCluster) -> Iterator[tuple[str, str]]:
    ns = f"qsc-rbac-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("apply", "-f", str(CRD))  # so kubectl can resolve workerpools
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                         "crd/workerpools.qscale.io")
    kube_cluster.kubectl("create", "namespace", ns)
    try:
        kube_cluster.kubectl("-n", ns, "apply", "-f", str(RBAC))
        kube_cluster.kubectl("-n", ns, "create", "serviceaccount", "qscale-controller")
        kube_cluster.kubectl("-n", ns, "create", "rolebinding", "qscale-controller",
                             "--role=qscale-controller",
                             f"--serviceaccount={ns}:qscale-controller")
        yield ns, f"system:serviceaccount:{ns}:qscale-controller"
    finally:
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _can(cluster: KubeCluster, ns: str, user: str, verb: str, what: str) -> bool:
    proc = cluster.kubectl("-n", ns, "auth", "can-i", verb, *what.split(), f"--as={user}",
                           check=False)
    answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert answer in ("yes", "no"), f"can-i {verb} {what}: {proc.stdout} {proc.stderr}"
    return answer == "yes"


def test_every_needed_verb_is_allowed(kube_cluster: KubeCluster,
                                      bound_sa: tuple[str, str]) -> None:
    ns, user = bound_sa
    missing = [f"{v} {w}" for v, w in ALLOWED if not _can(kube_cluster, ns, user, v, w)]
    assert missing == []


def test_nothing_more_is_allowed(kube_cluster: KubeCluster, bound_sa: tuple[str, str]) -> None:
    ns, user = bound_sa
    extra = [f"{v} {w}" for v, w in FORBIDDEN if _can(kube_cluster, ns, user, v, w)]
    assert extra == []


def test_pod_proxy_role_adds_only_the_proxy(kube_cluster: KubeCluster,
                                            bound_sa: tuple[str, str]) -> None:
    ns, user = bound_sa
    kube_cluster.kubectl("-n", ns, "create", "rolebinding", "qscale-controller-pod-proxy",
                         "--role=qscale-controller-pod-proxy",
                         f"--serviceaccount={ns}:qscale-controller")
    assert _can(kube_cluster, ns, user, "get", "pods --subresource=proxy")
    assert _can(kube_cluster, ns, user, "create", "pods --subresource=proxy")  # POST /cordon
    assert not _can(kube_cluster, ns, user, "create", "pods")
