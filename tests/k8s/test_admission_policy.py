"""The controller's `patch pods` reaches only pod-deletion-cost (issue #10, item 10).

RBAC cannot narrow a verb to a field: with `patch pods` alone the controller's token
could change the image of any pod in the namespace, brokers included. The chart ships
a ValidatingAdmissionPolicy for that; here the chart's own render (ServiceAccount,
Role, RoleBinding, policy and binding) is applied to a fresh namespace of the real API
server and the controller's token is used to try.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.k8s.harness import BASE_IMAGE, REPO
from tests.plugins.kind import KubeCluster

pytestmark = pytest.mark.k8s

RELEASE = "vap"
SA = f"{RELEASE}-qscale-controller"
COST = "controller.kubernetes.io/pod-deletion-cost"
KINDS = ("ServiceAccount", "Role", "RoleBinding", "ValidatingAdmissionPolicy",
         "ValidatingAdmissionPolicyBinding")


def _controller_docs(cluster: KubeCluster, ns: str) -> list[dict[str, Any]]:
    out = cluster.helm("template", RELEASE, str(REPO / "helm" / "qscale"), "--namespace", ns,
                       ).stdout
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] in KINDS
            and d["metadata"].get("labels", {}).get("app.kubernetes.io/component")
            == "controller"]


def _as_controller(cluster: KubeCluster, ns: str, path: Path) -> Path:
    token = cluster.kubectl("-n", ns, "create", "token", SA, "--duration=1h").stdout.strip()
    raw = cluster.kubectl_json("config", "view", "--raw", "--minify")
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kind", "cluster": raw["clusters"][0]["cluster"]}],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": SA, "context": {"cluster": "kind", "user": SA, "namespace": ns}}],
        "current-context": SA}))
    path.chmod(0o600)
    return path


@dataclass
class Answer:
    returncode: int
    stderr: str


def _patch(cluster: KubeCluster, kubeconfig: Path, ns: str, body: dict[str, Any]) -> Answer:
    """PATCH the pod as the controller does (patch_namespaced_pod, no GET first)."""
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    try:
        core.patch_namespaced_pod("victim", ns, body, _request_timeout=30)
    except ApiException as exc:
        return Answer(1, f"{exc.status} {exc.reason}: {exc.body}")
    return Answer(0, "")


def test_the_controllers_token_may_change_only_the_deletion_cost(
        kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> None:
    ns = namespace
    docs = _controller_docs(kube_cluster, ns)
    cluster_scoped = [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
    kube_cluster.apply("\n---\n".join(json.dumps(d) for d in docs), namespace=ns)
    try:
        kube_cluster.apply(json.dumps({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "victim", "labels": {"app": "broker"}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                "name": "main", "image": BASE_IMAGE, "imagePullPolicy": "Never",
                "command": ["sleep", "infinity"]}]}}), namespace=ns)
        kubeconfig = _as_controller(kube_cluster, ns, tmp_path / "controller-kubeconfig")
        allowed = _patch(kube_cluster, kubeconfig, ns, {"metadata": {"annotations": {COST: "7"}}})
        assert allowed.returncode == 0, allowed.stderr

        # The policy takes effect once the API server's informers have it: wait for a
        # harmless change to be refused (undoing it while it is still let through).
        deadline = time.monotonic() + 60
        while True:
            probe = _patch(kube_cluster, kubeconfig, ns,
                           {"metadata": {"labels": {"probe": str(time.monotonic_ns())}}})
            if probe.returncode != 0 or time.monotonic() > deadline:
                break
            kube_cluster.kubectl("-n", ns, "label", "pod", "victim", "probe-")
            time.sleep(1)
        image = _patch(kube_cluster, kubeconfig, ns, {"spec": {"containers": [
            {"name": "main", "image": "attacker/miner:latest"}]}})
        print("image patch with the controller's token:", image.returncode,
              image.stderr.strip()[:300])
        assert image.returncode != 0, "an image patch with the controller's token was allowed"
        assert "ValidatingAdmissionPolicy" in image.stderr and "deletion-cost" in image.stderr
        pod = kube_cluster.kubectl_json("-n", ns, "get", "pod", "victim")
        assert pod["spec"]["containers"][0]["image"] == BASE_IMAGE

        refused = {
            "a label": {"metadata": {"labels": {"app": "hijacked"}}},
            "another annotation": {"metadata": {"annotations": {"x": "y"}}},
            "a non-integer cost": {"metadata": {"annotations": {COST: "lots"}}},
            "a finalizer": {"metadata": {"finalizers": ["example.com/hold"]}},
        }
        for what, body in refused.items():
            result = _patch(kube_cluster, kubeconfig, ns, body)
            assert result.returncode != 0, f"{what} was allowed"
        allowed = _patch(kube_cluster, kubeconfig, ns, {"metadata": {"annotations": {COST: "-3"}}})
        assert allowed.returncode == 0, allowed.stderr
        pod = kube_cluster.kubectl_json("-n", ns, "get", "pod", "victim")
        assert pod["metadata"]["annotations"][COST] == "-3"
        assert pod["metadata"]["labels"] == {"app": "broker"}
        # An administrator is not the controller: the policy leaves everyone else alone.
        kube_cluster.kubectl("-n", ns, "label", "pod", "victim", "owner=admin")
    finally:
        for doc in cluster_scoped:
            kube_cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"],
                                 "--ignore-not-found", check=False)
