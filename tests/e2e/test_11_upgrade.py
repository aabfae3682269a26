"""`helm upgrade` from the previous chart (0.1.0) to this one, on kind (issue #11).

tests/e2e/charts/qscale-0.1.0.tgz is the chart as it was at ffc2428, packaged
(`git archive ffc2428 helm/qscale | tar -x -C DIR && helm package DIR/helm/qscale`): its
CRD sits in crds/, which Helm installs once and never upgrades. One upgrade checks:

- item 5, CRDs that upgrade: the cluster's CRD is set back to 0.1.0's (as 0.1.0 left it,
  managed by no release). The API server then drops status.controllerVersion, the field
  this chart's controller adds. A plain `helm upgrade` refuses loudly (the CRD is not the
  release's, and it lacks this chart's fields); with `--take-ownership` (once) the
  release takes the CRD over and upgrades it, and the field reaches status.
- item 8, replicas: pool `static` ran at 2 replicas without autoscaling and turns
  autoscaling on in the upgrade. The Deployment keeps its 2 replicas (0.1.0's chart
  dropped the field and the API server reset it to 1).
- item 7, on kind: the upgrade gives the workers a ServiceAccount and an extra env var;
  a task reads both (the env var, and the ServiceAccount its mounted token names).

The CRD is cluster-wide and other tests on the shared cluster use it: it is at 0.1.0's
version for the few seconds between setting it back and the upgrade, and whatever
happens the test leaves it at this chart's version, owned by the release that owned it
before (not by this test's deleted one). QSCALE_E2E_UPGRADE_TO=<chart dir>
upgrades to another chart instead (how this test was run against main's chart).
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.lean import CHART, LeanRelease, deep_merge, lean_values
from tests.e2e.release import wait_until
from tests.plugins.kind import KubeCluster

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow]

PREVIOUS = Path(__file__).parent / "charts" / "qscale-0.1.0.tgz"
TARGET = Path(os.environ.get("QSCALE_E2E_UPGRADE_TO", str(CHART)))
CRD_NAME = "workerpools.qscale.io"
CURRENT_CRD = CHART / "files" / "crds" / "workerpool.yaml"
GREETING = "hello-from-values"


def _previous_crd(tmp: Path) -> Path:
    with tarfile.open(PREVIOUS) as archive:
        member = archive.extractfile("qscale/crds/workerpool.yaml")
        assert member is not None
        path = tmp / "previous-crd.yaml"
        path.write_bytes(member.read())
    return path


def _values(image: str, *, previous: bool) -> dict[str, Any]:
    """Redis broker, the controller on, pool `static` without autoscaling before."""
    values = lean_values("redis", image, controller={"enabled": True},
                         worker={"replicas": 2},
                         autoscaling={"minReplicas": 1, "maxReplicas": 3,
                                      # the controller must not scale `static` down
                                      # before the test has looked
                                      "scaleDownWindowSeconds": 300})
    values["redis"]["image"] = {"tag": _broker_tag()}
    static: dict[str, Any] = {"name": "static", "queues": ["static"]}
    if previous:
        static["autoscaling"] = {"enabled": False}
    values["pools"] = [{"name": "default", "queues": ["default"]}, static]
    if not previous and _target_has_worker_service_accounts():
        values = deep_merge(values, {"worker": {
            "serviceAccount": {"create": True, "automountServiceAccountToken": True,
                               "annotations": {"example.com/role": "tasks"}},
            "extraEnv": [{"name": "QSCALE_E2E_GREETING", "value": GREETING}]}})
    return values


def _target_has_worker_service_accounts() -> bool:
    schema = json.loads((TARGET / "values.schema.json").read_text())
    return "serviceAccount" in schema["properties"]["worker"]["properties"]


def _broker_tag() -> str:
    """The qscale-redis image this tree builds (both charts run it through `redis-server
    ARGS`: 0.1.0 as command, this chart as args through the image's entrypoint)."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return str(chart["appVersion"])


def _crd(cluster: KubeCluster) -> dict[str, Any]:
    return cluster.kubectl_json("get", "crd", CRD_NAME)  # type: ignore[no-any-return]


def _status_fields(crd: dict[str, Any]) -> set[str]:
    version = crd["spec"]["versions"][0]
    return set(version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"])


def _set_crd_back(cluster: KubeCluster, previous_crd: Path) -> None:
    """The CRD as 0.1.0 left it: its schema, managed by no Helm release (kubectl replace
    rewrites metadata too, dropping another release's ownership annotations)."""
    crd = yaml.safe_load(previous_crd.read_text())
    crd["metadata"]["resourceVersion"] = _crd(cluster)["metadata"]["resourceVersion"]
    cluster.kubectl("replace", "-f", "-", input=json.dumps(crd))


HELM_OWNER_KEYS = ("app.kubernetes.io/managed-by", "app.kubernetes.io/instance",
                   "meta.helm.sh/release-name", "meta.helm.sh/release-namespace",
                   "helm.sh/resource-policy")


def _helm_owner(cluster: KubeCluster) -> dict[str, dict[str, str]]:
    """Which release the CRD belongs to (its Helm labels and annotations)."""
    meta = _crd(cluster)["metadata"]
    return {kind: {k: v for k, v in meta.get(kind, {}).items() if k in HELM_OWNER_KEYS}
            for kind in ("labels", "annotations")}


def _restore_current_crd(cluster: KubeCluster, owner: dict[str, dict[str, str]]) -> None:
    """This chart's CRD, owned again by whichever release owned it before the test (the
    test's own release is deleted with its namespace)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager",
                    "qscale-e2e-upgrade", "-f", str(CURRENT_CRD), check=False)
    for kind, verb in (("labels", "label"), ("annotations", "annotate")):
        pairs = [f"{k}={owner[kind][k]}" if k in owner[kind] else f"{k}-"
                 for k in HELM_OWNER_KEYS]
        cluster.kubectl(verb, "--overwrite", "crd", CRD_NAME, *pairs, check=False)


def _pruned(rel: LeanRelease, pool: str) -> bool:
    """Write status.controllerVersion by hand: does the API server keep it?"""
    rel.kubectl("patch", "workerpool", pool, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"controllerVersion": "written-by-hand"}}))
    return "controllerVersion" not in rel.get("workerpool", pool).get("status", {})


@pytest.fixture(scope="module")
def upgraded(kube_cluster: KubeCluster, e2e_image: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    rel = LeanRelease(kube_cluster, prefix="qscale-upgrade")
    facts: dict[str, Any] = {"namespace": rel.namespace}
    previous_crd = _previous_crd(tmp_path_factory.mktemp("crd"))
    owner = _helm_owner(kube_cluster)
    rel.create_namespace()
    pool = f"{rel.fullname}-default"
    try:
        began = time.monotonic()
        rel.helm("install", _values(e2e_image, previous=True), chart=PREVIOUS)
        facts["install_s"] = round(time.monotonic() - began)
        static = f"{rel.fullname}-worker-static"
        facts["static_before"] = rel.get("deployment", static)["spec"]["replicas"]

        _set_crd_back(kube_cluster, previous_crd)   # the shared CRD is 0.1.0's from here...
        facts["pruned_before"] = wait_until(lambda: _pruned(rel, pool), timeout=30,
                                            interval=1, what="the 0.1.0 CRD to prune")
        plain = rel.helm("upgrade", _values(e2e_image, previous=False), chart=TARGET,
                         timeout="1m", check=False)
        facts["plain_upgrade"] = {"rc": plain.returncode, "stderr": plain.stderr[-600:]}
        began = time.monotonic()
        taken = rel.helm("upgrade", _values(e2e_image, previous=False), "--take-ownership",
                         chart=TARGET, check=False)  # ... until this upgrade applies it
        facts["upgrade"] = {"rc": taken.returncode, "stderr": taken.stderr[-600:],
                            "seconds": round(time.monotonic() - began)}
        facts["static_after"] = rel.get("deployment", static)["spec"].get("replicas")
        crd = _crd(kube_cluster)
        facts["crd_owner"] = crd["metadata"].get("annotations", {}).get(
            "meta.helm.sh/release-namespace")
        facts["crd_status_fields"] = sorted(_status_fields(crd))

        def version() -> str | None:
            got = rel.get("workerpool", pool).get("status", {}).get("controllerVersion")
            return got if got and got != "written-by-hand" else None
        try:
            facts["controller_version"] = wait_until(version, timeout=90, interval=2,
                                                     what="status.controllerVersion")
        except AssertionError as exc:
            facts["controller_version"] = repr(exc)
        yield {**facts, "release": rel}
    finally:
        _restore_current_crd(kube_cluster, owner)
        facts["crd_owner_restored"] = _helm_owner(kube_cluster) == owner
        rel.delete_namespace()
        print(json.dumps({k: v for k, v in facts.items() if k != "release"}, indent=1))
    assert facts["crd_owner_restored"], (
        f"the CRD's owner was {owner}, now {_helm_owner(kube_cluster)}")


def test_crd_from_the_previous_chart_is_upgraded_and_its_new_field_reaches_status(
        upgraded: dict[str, Any]) -> None:
    assert upgraded["pruned_before"], "the 0.1.0 CRD should drop status.controllerVersion"
    plain = upgraded["plain_upgrade"]
    assert plain["rc"] != 0, "a plain upgrade over a CRD nobody manages must refuse"
    assert "CustomResourceDefinition" in plain["stderr"] and CRD_NAME in plain["stderr"]
    assert upgraded["upgrade"]["rc"] == 0, upgraded["upgrade"]
    assert upgraded["crd_owner"] == upgraded["namespace"]   # the release manages it now
    assert "controllerVersion" in upgraded["crd_status_fields"]
    assert upgraded["controller_version"] == _broker_tag(), upgraded["controller_version"]


def test_turning_autoscaling_on_keeps_the_replicas(upgraded: dict[str, Any]) -> None:
    assert upgraded["static_before"] == 2
    assert upgraded["upgrade"]["rc"] == 0, upgraded["upgrade"]
    assert upgraded["static_after"] == 2, (
        f"pool static went from 2 to {upgraded['static_after']} replicas when autoscaling "
        "was turned on")


def test_worker_service_account_and_env_reach_the_tasks(upgraded: dict[str, Any]) -> None:
    rel: LeanRelease = upgraded["release"]
    assert upgraded["upgrade"]["rc"] == 0, upgraded["upgrade"]
    out = rel.run_task(
        "import json; from qscale_e2e.tasks import identity; "
        "print(json.dumps(identity.apply_async(('QSCALE_E2E_GREETING',), queue='default')"
        ".get(timeout=90)))")
    seen = json.loads(out)
    assert seen["env"] == GREETING, seen
    assert seen["serviceaccount"] == \
        f"system:serviceaccount:{rel.namespace}:{rel.fullname}-worker", seen
    account = rel.get("serviceaccount", f"{rel.fullname}-worker")
    assert account["metadata"]["annotations"]["example.com/role"] == "tasks"

