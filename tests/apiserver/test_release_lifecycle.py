"""Issue #11 items 4, 5 and 8 with the real `helm` against a real (bare) API server.

No pod runs here (no nodes): these are the parts Helm and the API server decide alone.
Item 5: the CRD is installed, upgraded with the release (a field a later chart adds is
served, not pruned) and kept on uninstall; WorkerPools created as post-install hooks
are adopted by the next upgrade. Item 4: `helm uninstall` keeps the generated broker
Secrets and the next install reuses them. Item 8: turning autoscaling on keeps a pool's
replicas, and an upgrade keeps what the controller chose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.apiserver.conftest import CACHE, K8S_VERSION
from tests.chart.conftest import CHART, find_helm

# k8s: needs the Kubernetes binaries of the cluster tooling (not the kind cluster itself).
pytestmark = [pytest.mark.k8s, pytest.mark.slow]

CRD = "workerpools.qscale.io"


def _run(cmd: list[str], kubeconfig: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False,
                            env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:4])} ... failed:\n{result.stderr[-2000:]}", pytrace=False)
    return result


def helm(kubeconfig: Path, *args: str) -> str:
    return _run([find_helm(), *args], kubeconfig).stdout


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = CACHE / "k8s" / K8S_VERSION / "bin" / "kubectl"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} not found; build the cluster tooling with `make cluster`",
                    pytrace=False)
    return _run([str(binary), *args], kubeconfig, check)


def get(kubeconfig: Path, *args: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(kubectl(kubeconfig, "get", "-o", "json", *args).stdout)
    return obj


def exists(kubeconfig: Path, *args: str) -> bool:
    return kubectl(kubeconfig, "get", *args, check=False).returncode == 0


def test_crd_is_installed_upgraded_and_kept(apiserver: Path, tmp_path: Path) -> None:
    """Runs first: the bare API server has no CRD yet, so this release manages it."""
    assert not exists(apiserver, "crd", CRD)
    older = tmp_path / "qscale"
    shutil.copytree(CHART, older)
    crd_file = older / "files" / "crds" / "workerpool.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    version = crd["spec"]["versions"][0]
    del version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "controllerVersion"]
    version["additionalPrinterColumns"] = [
        c for c in version["additionalPrinterColumns"] if "controllerVersion" not in c["jsonPath"]]
    crd_file.write_text(yaml.safe_dump(crd))

    ns = ["-n", "crd", "--create-namespace"]
    helm(apiserver, "install", "qscale", str(older), *ns)
    live = get(apiserver, "crd", CRD)
    assert live["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert live["metadata"]["annotations"]["meta.helm.sh/release-namespace"] == "crd"
    assert exists(apiserver, "-n", "crd", "workerpool", "qscale-default")  # post-install hook

    # The first upgrade adopts the hook-made pool; its changes must still reach it (Helm
    # patches custom resources from the previous manifest, and an adopted pool has none).
    helm(apiserver, "upgrade", "qscale", str(CHART), "-n", "crd",
         "--set", "worker.concurrency=3")
    status = get(apiserver, "crd", CRD)["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["status"]["properties"]
    assert "controllerVersion" in status, "the upgrade did not reach the CRD"
    pool = get(apiserver, "-n", "crd", "workerpool", "qscale-default")
    assert pool["spec"]["concurrency"] == 3, "the first upgrade's values never reached the pool"
    helm(apiserver, "upgrade", "qscale", str(CHART), "-n", "crd",
         "--set", "worker.concurrency=5")
    pool = get(apiserver, "-n", "crd", "workerpool", "qscale-default")
    assert pool["spec"]["concurrency"] == 5, "a later upgrade's values never reached the pool"
    assert "qscale.io/made-by-hook" not in pool["metadata"]["annotations"]
    # A rollback to the first revision (no pools in its manifest) gets them back, and
    # the next upgrade's values reach them again.
    helm(apiserver, "rollback", "qscale", "1", "-n", "crd")
    assert exists(apiserver, "-n", "crd", "workerpool", "qscale-default")
    helm(apiserver, "upgrade", "qscale", str(CHART), "-n", "crd",
         "--set", "worker.concurrency=6")
    pool = get(apiserver, "-n", "crd", "workerpool", "qscale-default")
    assert pool["spec"]["concurrency"] == 6, "the upgrade after a rollback was dropped"
    kubectl(apiserver, "-n", "crd", "patch", "workerpool", "qscale-default",
            "--subresource=status", "--type=merge",
            "-p", '{"status": {"controllerVersion": "0.2.0"}}')
    pool = get(apiserver, "-n", "crd", "workerpool", "qscale-default")
    assert pool["status"]["controllerVersion"] == "0.2.0"  # served, not pruned
    assert "kind: WorkerPool" in helm(apiserver, "get", "manifest", "qscale", "-n", "crd")

    helm(apiserver, "uninstall", "qscale", "-n", "crd")
    assert exists(apiserver, "crd", CRD), "uninstall deleted the CRD (and every WorkerPool)"
    assert not exists(apiserver, "-n", "crd", "workerpool", "qscale-default")


def _leftover(name: str, release: str, namespace: str) -> dict[str, Any]:
    """A pool as the install-time hook makes it (Helm never deletes hooks)."""
    return {
        "apiVersion": "qscale.io/v1alpha1", "kind": "WorkerPool",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "Helm",
                                "app.kubernetes.io/instance": release,
                                "qscale.io/controller": f"{release}-qscale-controller"},
                     "annotations": {"helm.sh/hook": "post-install,post-rollback",
                                     "qscale.io/made-by-hook": "true",
                                     "meta.helm.sh/release-name": release,
                                     "meta.helm.sh/release-namespace": namespace}},
        "spec": {"queues": ["default"], "broker": {"secretRef": {"name": "x", "key": "url"}},
                 "targetRef": {"name": f"{name}-worker"}, "concurrency": 2},
    }


def test_pools_left_by_hooks_are_taken_over_or_removed(apiserver: Path, tmp_path: Path) -> None:
    """A release uninstalled while its pools were still hooks leaves them behind; so does
    one whose first upgrade stopped rendering a pool. The next install or upgrade takes the
    ones it renders over with its own values and deletes the others of its release."""
    ns = ["-n", "leftover"]
    crd = CHART / "files" / "crds" / "workerpool.yaml"   # not left to the first test
    kubectl(apiserver, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kubectl(apiserver, "create", "namespace", "leftover")
    manifest = tmp_path / "leftover.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        _leftover("qscale-default", "qscale", "leftover"),
        _leftover("qscale-renamed", "qscale", "leftover"),
        _leftover("other-default", "other", "leftover")]}))
    kubectl(apiserver, "apply", "-f", str(manifest))

    helm(apiserver, "install", "qscale", str(CHART), *ns, "--set", "worker.concurrency=7")
    pool = get(apiserver, *ns, "workerpool", "qscale-default")
    assert pool["spec"]["concurrency"] == 7, "the reinstall kept the leftover pool's spec"
    assert "qscale.io/made-by-hook" not in pool["metadata"]["annotations"]
    assert not exists(apiserver, *ns, "workerpool", "qscale-renamed"), "orphan kept"
    assert exists(apiserver, *ns, "workerpool", "other-default"), "another release's pool"

    # The same orphan, left again; this time an upgrade that renders no pool at all.
    again = tmp_path / "again.json"
    again.write_text(json.dumps(_leftover("qscale-renamed", "qscale", "leftover")))
    kubectl(apiserver, "apply", "-f", str(again))
    helm(apiserver, "upgrade", "qscale", str(CHART), *ns, "--set", "autoscaling.enabled=false")
    assert not exists(apiserver, *ns, "workerpool", "qscale-default")
    assert not exists(apiserver, *ns, "workerpool", "qscale-renamed")
    helm(apiserver, "uninstall", "qscale", *ns)


def test_reinstall_keeps_and_reuses_generated_broker_secrets(apiserver: Path) -> None:
    ns = ["-n", "reinstall"]
    values = ["--set", "broker.type=rabbitmq"]
    helm(apiserver, "install", "qscale", str(CHART), *ns, "--create-namespace", *values)
    names = ["qscale-rabbitmq", "qscale-redis"]
    before = {n: get(apiserver, *ns, "secret", n)["data"] for n in names}

    helm(apiserver, "uninstall", "qscale", *ns)
    for name in names:
        assert exists(apiserver, *ns, "secret", name), f"uninstall deleted {name}"
    assert not exists(apiserver, *ns, "secret", "qscale-control-token")

    helm(apiserver, "install", "qscale", str(CHART), *ns, *values)
    after = {n: get(apiserver, *ns, "secret", n)["data"] for n in names}
    assert after == before, "the reinstall generated new credentials for the kept volumes"
    assert "erlang-cookie" in after["qscale-rabbitmq"]


def test_autoscaling_keeps_the_pools_replicas(apiserver: Path) -> None:
    ns = ["-n", "replicas"]
    deployment = [*ns, "deployment", "qscale-worker-default"]
    helm(apiserver, "install", "qscale", str(CHART), *ns, "--create-namespace",
         "--set", "autoscaling.enabled=false", "--set", "worker.replicas=3")
    assert get(apiserver, *deployment)["spec"]["replicas"] == 3

    helm(apiserver, "upgrade", "qscale", str(CHART), *ns, "--set", "autoscaling.enabled=true")
    assert get(apiserver, *deployment)["spec"]["replicas"] == 3, "reset when autoscaling began"

    kubectl(apiserver, *ns, "scale", "deployment", "qscale-worker-default", "--replicas=5")
    helm(apiserver, "upgrade", "qscale", str(CHART), *ns, "--set", "autoscaling.enabled=true",
         "--set", "worker.logLevel=DEBUG")
    assert get(apiserver, *deployment)["spec"]["replicas"] == 5, "upgrade undid the controller"


def test_an_older_crd_installed_without_helm_is_taken_over_loudly(apiserver: Path,
                                                                 tmp_path: Path) -> None:
    """Chart 0.1.x installed the CRD from crds/ (no Helm ownership), as `kubectl apply`
    would. An install leaves it alone and its NOTES say it lacks fields; an upgrade
    refuses (Helm's ownership error) until `--take-ownership`, instead of the API server
    pruning the new field in silence."""
    crd = yaml.safe_load((CHART / "files" / "crds" / "workerpool.yaml").read_text())
    del crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"][
        "properties"]["controllerVersion"]
    (tmp_path / "crd.yaml").write_text(yaml.safe_dump(crd))
    if exists(apiserver, "crd", CRD):
        kubectl(apiserver, "delete", "crd", CRD, "--wait=true")
    kubectl(apiserver, "create", "-f", str(tmp_path / "crd.yaml"))

    ns = ["-n", "unmanaged"]
    notes = helm(apiserver, "install", "qscale", str(CHART), *ns, "--create-namespace")
    assert "WARNING: it lacks fields of this chart (status.controllerVersion)" in notes
    assert "meta.helm.sh/release-name" not in get(apiserver, "crd", CRD)["metadata"].get(
        "annotations", {})

    refused = _run([find_helm(), "upgrade", "qscale", str(CHART), *ns], apiserver, check=False)
    assert refused.returncode != 0 and "invalid ownership metadata" in refused.stderr

    helm(apiserver, "upgrade", "qscale", str(CHART), *ns, "--take-ownership")
    live = get(apiserver, "crd", CRD)
    assert live["metadata"]["annotations"]["meta.helm.sh/release-namespace"] == "unmanaged"
    assert "controllerVersion" in live["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["status"]["properties"]


def test_a_namespace_scoped_deployer_installs_with_crds_left_to_the_admin(
        apiserver: Path, tmp_path: Path) -> None:
    """A tenant who may act only in its namespace installs with crds.install=false and no
    admission policy (both cluster-scoped). The chart's NOTES looked the CRD up anyway,
    and Helm's lookup fails the whole render on Forbidden (found reading the chart)."""
    files = CHART / "files" / "crds" / "workerpool.yaml"
    kubectl(apiserver, "apply", "--server-side", "-f", str(files))
    kubectl(apiserver, "create", "namespace", "tenant")
    kubectl(apiserver, "-n", "tenant", "create", "serviceaccount", "deployer")
    # Everything in its namespace, nothing cluster-scoped (no controller-manager runs
    # here to aggregate the built-in admin role, so the Role says it outright).
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "namespace-owner", "namespace": "tenant"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    (tmp_path / "role.yaml").write_text(yaml.safe_dump(role))
    kubectl(apiserver, "apply", "-f", str(tmp_path / "role.yaml"))
    kubectl(apiserver, "-n", "tenant", "create", "rolebinding", "deployer",
            "--role=namespace-owner", "--serviceaccount=tenant:deployer")
    token = kubectl(apiserver, "-n", "tenant", "create", "token", "deployer").stdout.strip()
    admin = yaml.safe_load(apiserver.read_text())
    admin["users"] = [{"name": "t", "user": {"token": token}}]
    tenant = tmp_path / "tenant-kubeconfig"
    tenant.write_text(yaml.safe_dump(admin))
    tenant.chmod(0o600)
    assert kubectl(tenant, "get", "crd", CRD, check=False).returncode != 0, \
        "the tenant must not be able to read CRDs for this test to mean anything"

    helm(tenant, "install", "qscale", str(CHART), "-n", "tenant", "--set", "crds.install=false",
         "--set", "controller.admissionPolicy.enabled=false")
    assert exists(apiserver, "-n", "tenant", "workerpool", "qscale-default")
