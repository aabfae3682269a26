"""Monitoring: operator resources only with the CRDs; built-in Prometheus; dashboard."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.chart.conftest import CHART, Render, by_kind, named

OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


def test_no_operator_resources_without_the_capability(render: Render) -> None:
    assert not OPERATOR_KINDS & {d["kind"] for d in render()}


def test_operator_resources_with_the_capability(render: Render) -> None:
    docs = render("--api-versions", "monitoring.coreos.com/v1")
    assert {d["kind"] for d in docs} >= {"PodMonitor", "PrometheusRule"}
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


def test_builtin_prometheus_finds_pods_by_dns_without_api_access(render: Render) -> None:
    docs = render(values=[CHART / "ci" / "redis-values.yaml"])
    config = named(docs, "ConfigMap", "qscale-prometheus")
    prom = yaml.safe_load(config["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    workers = jobs["qscale-workers"]["dns_sd_configs"][0]
    assert workers["names"] == ["qscale-worker-default-scrape.qscale.svc",
                                "qscale-worker-reports-scrape.qscale.svc"]
    assert workers["port"] == 8080
    assert jobs["qscale-controller"]["dns_sd_configs"][0]["port"] == 8081
    for pool in ("default", "reports"):
        service = named(docs, "Service", f"qscale-worker-{pool}-scrape")
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True  # draining pods too
        assert service["spec"]["selector"]["qscale.io/pool"] == pool
    assert "QscaleControllerNoLeader" in config["data"]["alerts.yml"]
    assert not [d for d in by_kind(docs, "Role") if d["metadata"]["name"] == "qscale-prometheus"]
    account = named(docs, "ServiceAccount", "qscale-prometheus")
    assert account["automountServiceAccountToken"] is False


def test_kubernetes_discovery_gets_a_least_privilege_role(render: Render) -> None:
    docs = render("--set", "monitoring.prometheus.discovery=kubernetes")
    prom = named(docs, "ConfigMap", "qscale-prometheus")["data"]["prometheus.yml"]
    assert "role: pod" in prom
    assert "app.kubernetes.io/instance=qscale" in prom
    role = named(docs, "Role", "qscale-prometheus")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "list", "watch"]}]
    assert not by_kind(docs, "ClusterRole")
    assert not [d for d in by_kind(docs, "Service") if d["metadata"]["name"].endswith("-scrape")]


def test_dashboard_uses_metrics_the_code_exports(render: Render) -> None:
    docs = render()
    dashboard_cm = next(d for d in by_kind(docs, "ConfigMap")
                        if d["metadata"]["labels"].get("grafana_dashboard") == "1")
    dashboard = json.loads(dashboard_cm["data"]["qscale.json"])
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Queue depth (ready)", "In flight", "Replicas", "Throughput",
            "Task duration"} <= titles
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    # every module of both packages: metrics move between modules when packages reshape
    root = CHART.parents[1]
    source = "".join(p.read_text() for pkg in ("worker", "controller")
                     for p in sorted((root / pkg).rglob("*.py")))
    for name in ("qscale_tasks_total", "qscale_task_duration_seconds", "qscale_in_flight",
                 "qscale_controller_queue_ready", "qscale_controller_current_replicas",
                 "qscale_controller_desired_replicas"):
        assert name in exprs
        assert name.removesuffix("_total") in source, f"{name} is not exported by the code"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_each_controller_pod_is_scraped_once_by_the_operator(render: Render) -> None:
    """Issue #10, item 9: a ServiceMonitor matching two Services (the ClusterIP one and
    the headless scrape one) scraped every controller pod twice, doubling sums."""
    docs = render("--api-versions", "monitoring.coreos.com/v1", "--set",
                  "controller.replicas=2")
    controller = named(docs, "Deployment", "qscale-controller")
    pod_labels = controller["spec"]["template"]["metadata"]["labels"]
    targets = sum(1 for m in by_kind(docs, "PodMonitor")
                  if _selects(m["spec"]["selector"]["matchLabels"], pod_labels))
    services = [s for s in by_kind(docs, "Service")
                if _selects(s["spec"].get("selector") or {"-": "-"}, pod_labels)]
    for monitor in by_kind(docs, "ServiceMonitor"):
        matched = [s for s in services
                   if _selects(monitor["spec"]["selector"]["matchLabels"],
                               s["metadata"]["labels"])]
        targets += len(matched) * len(monitor["spec"]["endpoints"])
    assert targets == 1, f"each controller pod is scraped {targets} times"


def _prometheus_checksum(docs: list[dict[str, Any]]) -> str:
    deployment = named(docs, "Deployment", "qscale-prometheus")
    checksum: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    return checksum


def test_prometheus_restarts_when_a_pool_is_added(render: Render) -> None:
    """Issue #11 item 8: the scrape targets follow `pools`, so the checksum must too (it
    covered only the rules and the interval, and a new pool went unscraped)."""
    one = render()
    two = render("--set-json", 'pools=[{"name":"default","queues":["default"]},'
                               '{"name":"extra","queues":["extra"]}]')
    assert "qscale-worker-extra-scrape" in named(two, "ConfigMap", "qscale-prometheus")[
        "data"]["prometheus.yml"]
    assert _prometheus_checksum(one) != _prometheus_checksum(two)
    assert _prometheus_checksum(one) == _prometheus_checksum(render())  # stable


def _alert_names(rules_yaml: str) -> set[str]:
    return {r["alert"] for g in yaml.safe_load(rules_yaml)["groups"] for r in g["rules"]}


def test_no_leader_alert_only_with_a_controller(render: Render) -> None:
    """Issue #11 item 8: absent(qscale_controller_is_leader == 1) fires for ever without one."""
    with_controller = named(render(), "ConfigMap", "qscale-prometheus")["data"]["alerts.yml"]
    assert "QscaleControllerNoLeader" in _alert_names(with_controller)
    docs = render("--set", "controller.enabled=false", "--api-versions",
                  "monitoring.coreos.com/v1")
    builtin = named(docs, "ConfigMap", "qscale-prometheus")["data"]["alerts.yml"]
    assert "QscaleControllerNoLeader" not in _alert_names(builtin)
    rule = by_kind(docs, "PrometheusRule")[0]
    assert "QscaleControllerNoLeader" not in {
        r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
