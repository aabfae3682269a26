"""Fixtures of the kind tests: a namespace per test, the REAL worker image."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import _chart_version, _on_node, _run
from tests.plugins.kind import KubeCluster, _paused_alarm


@pytest.fixture(scope="module")
def image_version(kube_cluster: KubeCluster) -> str:
    """The qscale and qscale-redis images of this checkout, built (cached) and loaded."""
    env, version = kube_cluster.env(), _chart_version()
    with _paused_alarm():
        _run(["bash", "hack/build-image.sh", "qscale", "qscale-redis"], env, 3600,
             "hack/build-image.sh qscale qscale-redis")
        for name in (f"qscale:{version}", f"qscale-redis:{version}"):
            if not _on_node(kube_cluster, name, env):
                kube_cluster.load_image(name)
    return version


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = f"qscale-test-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
