"""Reinstall, GitOps and upgrades, as far as a render shows them (issue #11 items 4, 5, 8).

What needs a cluster (a Secret kept by `helm uninstall`, `lookup`, a CRD upgrade reaching
status, live replicas kept) runs with the real helm against a bare API server in
tests/apiserver/; RabbitMQ's user synced to a new Secret on a kept volume runs against
the real image in tests/images/.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, Render, by_kind, helm_template, named

CRD_FILE = CHART / "files" / "crds" / "workerpool.yaml"


def _secrets(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}


# -- item 4: reinstall and GitOps --

@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_generated_broker_secrets_outlive_uninstall(render: Render, broker: str) -> None:
    """The broker's PVC outlives `helm uninstall`; so must the password it was written with."""
    secrets = _secrets(render("--set", f"broker.type={broker}"))
    for name in (["qscale-redis"] + (["qscale-rabbitmq"] if broker == "rabbitmq" else [])):
        assert secrets[name]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", name
    # The control token belongs to no data: it goes with the release.
    assert "annotations" not in secrets["qscale-control-token"]["metadata"]


def test_rabbitmq_secret_carries_an_erlang_cookie(render: Render) -> None:
    data = _secrets(render("--set", "broker.type=rabbitmq"))["qscale-rabbitmq"]["data"]
    cookie = base64.b64decode(data["erlang-cookie"]).decode()
    assert len(cookie) == 48 and cookie.isalnum()


EXISTING = ("--set", "redis.auth.existingSecret=my-redis",
            "--set", "rabbitmq.auth.existingSecret=my-rabbitmq",
            "--set", "autoscaling.cordon.existingSecret=my-token",
            "--set", "autoscaling.cordon.tokenKey=control")


def test_gitops_renders_are_stable_with_existing_secrets(helm: str) -> None:
    """`helm template` (Argo CD) has no cluster to read a generated secret back from:
    with existingSecret everywhere, two renders are identical and hold no Secret."""
    args = ("--set", "broker.type=rabbitmq", *EXISTING)
    first, second = (helm_template(helm, *args).stdout for _ in range(2))
    assert first == second
    docs = [d for d in yaml.safe_load_all(first) if d]
    assert not by_kind(docs, "Secret")
    refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for d in by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet")
            for c in d["spec"]["template"]["spec"]["containers"]
            + d["spec"]["template"]["spec"].get("initContainers", [])
            for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {("my-rabbitmq", "url"), ("my-rabbitmq", "password"),
                    ("my-rabbitmq", "erlang-cookie"), ("my-redis", "url"),
                    ("my-redis", "password"), ("my-token", "control")}


def test_without_existing_secrets_each_render_is_new(helm: str) -> None:
    """Why GitOps needs existingSecret: the generated values differ per render."""
    first, second = (helm_template(helm, "--set", "broker.type=rabbitmq").stdout
                     for _ in range(2))
    assert first != second


def test_existing_rabbitmq_secret_without_cookie_keeps_the_nodes_own(render: Render) -> None:
    docs = render("--set", "broker.type=rabbitmq", *EXISTING)
    init = named(docs, "StatefulSet", "qscale-rabbitmq")["spec"]["template"]["spec"][
        "initContainers"][0]
    cookie = next(e for e in init["env"] if e["name"] == "ERLANG_COOKIE")
    assert cookie["valueFrom"]["secretKeyRef"]["optional"] is True


# -- item 5: the CRD is a template, upgraded with the release, kept on uninstall --

def test_crd_is_a_template_kept_on_uninstall(render: Render) -> None:
    assert not (CHART / "crds").exists(), "Helm never upgrades crds/"
    crd = named(render(), "CustomResourceDefinition", "workerpools.qscale.io")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["spec"] == yaml.safe_load(CRD_FILE.read_text())["spec"]
    assert not by_kind(render("--set", "crds.install=false"), "CustomResourceDefinition")


def test_workerpools_wait_for_a_crd_the_cluster_does_not_serve_yet(render: Render) -> None:
    """First install: Helm cannot map a WorkerPool whose CRD is in the same manifest, so
    they are post-install hooks that the next upgrade adopts (ownership metadata)."""
    pool = by_kind(render(), "WorkerPool")[0]
    annotations = pool["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-rollback"
    assert annotations["qscale.io/made-by-hook"] == "true"
    assert annotations["meta.helm.sh/release-name"] == "qscale"
    assert annotations["meta.helm.sh/release-namespace"] == "qscale"
    assert pool["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    served = by_kind(render("--api-versions", "qscale.io/v1alpha1/WorkerPool"), "WorkerPool")[0]
    assert "annotations" not in served["metadata"]


def test_kubernetes_older_than_the_crds_cel_rules_is_refused(helm: str) -> None:
    old = helm_template(helm, "--kube-version", "1.24.9", check=False)
    assert old.returncode != 0
    assert "kubeVersion" in old.stderr
    assert helm_template(helm, "--kube-version", "1.25.0").returncode == 0


# -- item 8: replicas of autoscaled pools --

def test_autoscaled_pools_leave_replicas_to_the_controller(render: Render) -> None:
    """No live Deployment (a render): autoscaled pools carry no replicas; static ones do."""
    docs = render("--set", "worker.replicas=3", "--set-json",
                  'pools=[{"name":"a","queues":["a"]},'
                  '{"name":"b","queues":["b"],"autoscaling":{"enabled":false}}]')
    replicas = {d["metadata"]["labels"]["qscale.io/pool"]: d["spec"].get("replicas")
                for d in by_kind(docs, "Deployment")
                if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"}
    assert replicas == {"a": None, "b": 3}


# -- NOTES: how to get the image, and warnings --

@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart plus one template that renders NOTES (helm template skips NOTES.txt)."""
    chart = tmp_path_factory.mktemp("notes") / "qscale"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ include "qscale.notes" . | toJson }}\n')
    assert (chart / "templates" / "NOTES.txt").read_text().strip() == \
        '{{- include "qscale.notes" . }}'
    return chart


def _notes(helm: str, chart: Path, *args: str) -> str:
    import subprocess
    out = subprocess.run([helm, "template", "qscale", str(chart), "-n", "qscale", "-s",
                          "templates/zz-notes.yaml", *args], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    notes: str = yaml.safe_load(out)["data"]["notes"]
    return notes


def test_notes_lead_with_getting_the_image_and_warn_on_the_default(
        helm: str, notes_chart: Path) -> None:
    notes = _notes(helm, notes_chart)
    head = notes[:notes.index("1. Check the round trip")]
    assert "WARNING: qscale:0.2.0 is the chart's default image" in head
    assert "kind load docker-image qscale:0.2.0" in head
    assert "docker push REGISTRY/qscale:0.2.0" in head
    assert "--set redis.image.repository=redis" in head
    published = _notes(helm, notes_chart, "--set", "image.registry=registry.example.com",
                       "--set", "redis.image.repository=redis")
    assert "WARNING" not in published
    assert "registry.example.com/qscale:0.2.0" in published
    assert "redis.image.repository" not in published


def test_notes_say_who_reaches_the_broker_and_warn_when_podmonitors_cannot_scrape(
        helm: str, notes_chart: Path) -> None:
    notes = _notes(helm, notes_chart)
    assert "admit them (other namespaces) with networkPolicy.brokerFrom" in notes
    external = _notes(helm, notes_chart, "-f", str(CHART / "ci" / "external-broker-values.yaml"))
    assert "the broker admits" not in external  # no broker pod, no broker policy
    admitted_producers = _notes(helm, notes_chart, "--set-json",
                                'networkPolicy.brokerFrom=[{"namespaceSelector": {}}]')
    assert "1 peer(s) of networkPolicy.brokerFrom" in admitted_producers
    assert "admit them (other namespaces)" not in admitted_producers
    assert "PodMonitors" not in notes  # no prometheus-operator: nothing to warn about
    operator = ("--api-versions", "monitoring.coreos.com/v1")
    assert "WARNING: the PodMonitors' Prometheus is not admitted" in _notes(
        helm, notes_chart, *operator)
    admitted = _notes(helm, notes_chart, *operator, "--set-json",
                      'networkPolicy.metricsFrom=[{"namespaceSelector": {}}]')
    assert "PodMonitors" not in admitted
    assert "Network policies" not in _notes(helm, notes_chart, "--set",
                                            "networkPolicy.enabled=false")
    no_controller = _notes(helm, notes_chart, "--set", "controller.enabled=false")
    assert "Workers admit this release's Prometheus." in no_controller
