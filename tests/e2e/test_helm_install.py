"""End to end on kind: `helm install` (each broker), `helm test` round trip, uninstall.

Builds the four images when missing (hack/build-image.sh) and loads them into the
cluster, installs the chart in a fresh namespace with `--wait`, runs the chart's
test hook (enqueue qscale.demo.add(2, 3), wait for 5), then uninstalls and checks
that only the brokers' PersistentVolumeClaims and generated Secrets are left.
"""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.plugins.kind import REPO_ROOT, KubeCluster

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow]

IMAGES = ("qscale", "qscale-redis", "qscale-rabbitmq", "qscale-prometheus")
RELEASE = "qscale-e2e"
KINDS = ("deployments,statefulsets,pods,services,configmaps,secrets,serviceaccounts,roles,"
         "rolebindings,networkpolicies,poddisruptionbudgets,workerpools,persistentvolumeclaims")


def _version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


_LOADED: list[str] = []  # images already built and loaded by this test session


@pytest.fixture(scope="module")
def images(kube_cluster: KubeCluster) -> list[str]:
    """The chart's images loaded into kind: qscale rebuilt from this tree (cached layers
    make that quick), the Debian-package images built only when missing."""
    if _LOADED:
        return list(_LOADED)
    tags = [f"{name}:{_version()}" for name in IMAGES]
    missing = [name for name, tag in zip(IMAGES, tags, strict=True)
               if name == "qscale" or subprocess.run(
                   ["docker", "image", "inspect", tag], capture_output=True,
                   check=False).returncode != 0]
    if missing:
        result = subprocess.run(["bash", str(REPO_ROOT / "hack" / "build-image.sh"), *missing],
                                capture_output=True, text=True, timeout=1800, check=False)
        if result.returncode != 0:
            pytest.fail(f"image build failed: {result.stderr[-2000:]}", pytrace=False)
    kube_cluster.load_image(*tags, timeout=900)
    _LOADED.extend(tags)
    return tags


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"qscale-e2e-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube_cluster.helm("uninstall", RELEASE, "-n", name, "--wait", check=False)
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _release_objects(kube_cluster: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    out = kube_cluster.kubectl("get", KINDS, "-n", namespace, "-o", "json",
                               "-l", f"app.kubernetes.io/instance={RELEASE}").stdout
    return list(json.loads(out)["items"])


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_install_roundtrip_uninstall(kube_cluster: KubeCluster, images: list[str],
                                     namespace: str, broker: str) -> None:
    started = time.monotonic()
    kube_cluster.helm(
        "install", RELEASE, str(REPO_ROOT / "helm" / "qscale"), "-n", namespace,
        "--set", f"broker.type={broker}", "--set", "redis.persistence.size=128Mi",
        "--set", "rabbitmq.persistence.size=256Mi", "--set", "worker.concurrency=1",
        "--wait", "--timeout", "10m", timeout=700)
    installed_s = time.monotonic() - started
    print(f"helm install --wait took {installed_s:.0f}s")

    secret_before = kube_cluster.kubectl_json("get", "secret", f"{RELEASE}-redis",
                                              "-n", namespace)["data"]
    # An upgrade must keep the generated password (the PVC's data was written with it).
    kube_cluster.helm("upgrade", RELEASE, str(REPO_ROOT / "helm" / "qscale"), "-n", namespace,
                      "--reuse-values", "--wait", "--timeout", "5m", timeout=400)
    secret_after = kube_cluster.kubectl_json("get", "secret", f"{RELEASE}-redis",
                                             "-n", namespace)["data"]
    assert secret_after == secret_before

    pools = kube_cluster.kubectl_json("get", "workerpools", "-n", namespace)["items"]
    assert [p["spec"]["targetRef"]["name"] for p in pools] == [f"{RELEASE}-worker-default"]

    started = time.monotonic()
    # The pod exits 0 only when the worker returned 5 (it is deleted on success, so
    # there are no logs to read then).
    test = kube_cluster.helm("test", RELEASE, "-n", namespace, "--timeout", "5m",
                             timeout=400, check=False)
    print(f"helm test took {time.monotonic() - started:.0f}s")
    assert test.returncode == 0, test.stdout + test.stderr
    assert "Succeeded" in test.stdout

    kube_cluster.helm("uninstall", RELEASE, "-n", namespace, "--wait", timeout=300)
    deadline = time.monotonic() + 120
    left: list[str] = []
    while time.monotonic() < deadline:
        left = [f"{o['kind']}/{o['metadata']['name']}" for o in _release_objects(kube_cluster,
                                                                                  namespace)]
        if all(item.startswith(("PersistentVolumeClaim/", "Secret/")) for item in left):
            break
        time.sleep(2)
    # The brokers' data and their generated credentials outlive the release, so a
    # reinstall logs in to the kept data (helm.sh/resource-policy: keep on the Secrets).
    brokers = ["redis", "rabbitmq"] if broker == "rabbitmq" else ["redis"]
    expected = [f"PersistentVolumeClaim/data-{RELEASE}-{b}-0" for b in brokers]
    expected += [f"Secret/{RELEASE}-{b}" for b in brokers]
    assert sorted(left) == sorted(expected), left
    for b in brokers:
        secret = kube_cluster.kubectl_json("-n", namespace, "get", "secret", f"{RELEASE}-{b}")
        assert secret["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep"
