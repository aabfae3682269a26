"""Monitoring: operator resources only with the CRDs; built-in Prometheus; dashboard."""

from __future__ import annotations

import json

from tests.chart.conftest import CHART, Render, by_kind, named

OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


def test_no_operator_resources_without_the_capability(render: Render) -> None:
    assert not OPERATOR_KINDS & {d["kind"] for d in render()}


def test_operator_resources_with_the_capability(render: Render) -> None:
    docs = render("--api-versions", "monitoring.coreos.com/v1")
    assert {d["kind"] for d in docs} >= OPERATOR_KINDS
    rule = by_kind(docs, "PrometheusRule")[0]
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"QscaleQueueBacklogGrowing", "QscaleQueueWaitHigh",
                      "QscaleDeadLettersGrowing", "QscaleControllerErrors",
                      "QscaleControllerNoLeader"}
    monitor = by_kind(docs, "PodMonitor")[0]
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"


def test_operator_resources_can_be_disabled(render: Render) -> None:
    docs = render("--api-versions", "monitoring.coreos.com/v1",
                  values=[CHART / "ci" / "no-monitoring-values.yaml"])
    assert not OPERATOR_KINDS & {d["kind"] for d in docs}
    assert not [d for d in docs if d["metadata"]["name"].endswith("-prometheus")]


def test_builtin_prometheus_scrapes_release_pods_with_least_privilege(render: Render) -> None:
    docs = render()
    config = named(docs, "ConfigMap", "qscale-prometheus")
    prom = config["data"]["prometheus.yml"]
    assert "role: pod" in prom
    assert "app.kubernetes.io/instance=qscale" in prom
    assert "QscaleControllerNoLeader" in config["data"]["alerts.yml"]
    role = named(docs, "Role", "qscale-prometheus")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "list", "watch"]}]
    assert not by_kind(docs, "ClusterRole")


def test_dashboard_uses_metrics_the_code_exports(render: Render) -> None:
    docs = render()
    dashboard_cm = next(d for d in by_kind(docs, "ConfigMap")
                        if d["metadata"]["labels"].get("grafana_dashboard") == "1")
    dashboard = json.loads(dashboard_cm["data"]["qscale.json"])
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Queue depth (ready)", "In flight", "Replicas", "Throughput",
            "Task duration"} <= titles
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    source = (CHART.parents[1] / "worker" / "metrics.py").read_text() + \
        (CHART.parents[1] / "controller" / "metrics.py").read_text()
    for name in ("qscale_tasks_total", "qscale_task_duration_seconds", "qscale_in_flight",
                 "qscale_controller_queue_ready", "qscale_controller_current_replicas",
                 "qscale_controller_desired_replicas"):
        assert name in exprs
        assert name.removesuffix("_total") in source, f"{name} is not exported by the code"
