"""NetworkPolicy renders: who may reach the brokers, the workers and the controller.

Enforcement itself is proven on the kind cluster under a real policy agent
(tests/e2e/test_08_network_policy.py); here: the rendered selectors admit exactly the
pods they should, and the knobs add peers without dropping the chart's own.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, Render, by_kind, helm_template

PRODUCERS = {"namespaceSelector": {"matchLabels": {"team": "shop"}},
             "podSelector": {"matchLabels": {"app": "checkout"}}}
SCRAPER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    labels = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            labels[doc["metadata"]["name"]] = doc["spec"]["template"]["metadata"]["labels"]
        elif doc["kind"] == "Pod":
            labels[doc["metadata"]["name"]] = doc["metadata"]["labels"]
    return labels


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def selected(policy: dict[str, Any], labels: dict[str, dict[str, str]]) -> set[str]:
    return {n for n, lab in labels.items()
            if matches(policy["spec"]["podSelector"]["matchLabels"], lab)}


def admitted(peers: list[dict[str, Any]], labels: dict[str, dict[str, str]]) -> set[str]:
    """The chart's pods a same-namespace podSelector peer admits."""
    return {n for n, lab in labels.items() for peer in peers
            if set(peer) == {"podSelector"} and matches(peer["podSelector"]["matchLabels"], lab)}


def policies_by_target(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    labels = pod_labels(docs)
    out: dict[str, list[dict[str, Any]]] = {}
    for policy in by_kind(docs, "NetworkPolicy"):
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for name in selected(policy, labels):
            out.setdefault(name, []).append(policy)
    return out


@pytest.mark.parametrize("values", [(), (CHART / "ci" / "rabbitmq-values.yaml",)],
                         ids=["redis", "rabbitmq"])
def test_each_listening_pod_admits_exactly_its_clients(render: Render,
                                                      values: tuple[Any, ...]) -> None:
    docs = render(values=values)
    labels = pod_labels(docs)
    targets = policies_by_target(docs)
    workers = {n for n in labels if "-worker-" in n}
    brokers = {n for n in labels if n.endswith(("-redis", "-rabbitmq"))}
    assert workers and brokers
    assert set(targets) == brokers | workers | {"qscale-controller"}
    clients = workers | {"qscale-controller", "qscale-prometheus", "qscale-test-roundtrip"}
    for name, policies in targets.items():
        (policy,) = policies
        rules = policy["spec"]["ingress"]
        by_port = {p["port"]: admitted(rule["from"], labels)
                   for rule in rules for p in rule["ports"]}
        if name in brokers:
            for port in ({6379} if name.endswith("-redis") else {5672, 15672}):
                assert by_port.pop(port) == clients, (name, port)
            if name.endswith("-rabbitmq"):
                assert by_port.pop(15692) == {"qscale-prometheus"}, name
            assert not by_port, (name, by_port)
            # Only this release's labelled pods: another release's workers in the same
            # namespace carry qscale.io/broker-client too.
            own = rules[0]["from"][0]["podSelector"]["matchLabels"]
            assert own == {"app.kubernetes.io/instance": "qscale",
                           "qscale.io/broker-client": "true"}
        elif name in workers:
            assert by_port == {8080: {"qscale-controller", "qscale-prometheus"}}, name
        else:
            assert by_port == {8081: {"qscale-prometheus"}}, name


def test_another_release_in_the_namespace_is_not_a_broker_client(render: Render,
                                                                 helm: str) -> None:
    ours = render()
    out = subprocess.run([helm, "template", "other", str(CHART), "--namespace", "qscale"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    other_pods = pod_labels([doc for doc in yaml.safe_load_all(out) if doc])
    assert other_pods
    for policy in by_kind(ours, "NetworkPolicy"):
        if policy["metadata"]["name"] != "qscale-redis":
            continue
        assert not admitted(policy["spec"]["ingress"][0]["from"], other_pods)


def test_knobs_add_peers_and_keep_the_charts_own(render: Render) -> None:
    values = (CHART / "ci" / "rabbitmq-values.yaml",)
    docs = render("--set-json", f"networkPolicy.brokerFrom=[{json.dumps(PRODUCERS)}]",
                  "--set-json", f"networkPolicy.metricsFrom=[{json.dumps(SCRAPER)}]",
                  values=values)
    labels = pod_labels(docs)
    for name, (policy,) in policies_by_target(docs).items():
        for rule in policy["spec"]["ingress"]:
            ports = {p["port"] for p in rule["ports"]}
            extra = [p for p in rule["from"] if set(p) != {"podSelector"}]
            client_ports = {6379, 5672, 15672}
            assert extra == ([PRODUCERS] if ports <= client_ports else [SCRAPER]), (name, ports)
            assert admitted(rule["from"], labels), f"{name}: the chart's own clients were dropped"


@pytest.mark.parametrize("peer", [{}, {"from": [{"podSelector": {}}]}, {"podselector": {}}])
def test_a_peer_that_is_not_a_peer_is_refused(helm: str, peer: dict[str, Any]) -> None:
    result = helm_template(helm, "--set-json", f"networkPolicy.brokerFrom=[{json.dumps(peer)}]",
                           check=False)
    assert result.returncode != 0 and "brokerFrom" in result.stderr, result.stderr[-500:]


def test_without_a_controller_the_workers_still_admit_prometheus(render: Render) -> None:
    docs = render("--set", "controller.enabled=false")
    targets = policies_by_target(docs)
    assert "qscale-controller" not in targets
    worker = next(p for n, ps in targets.items() if "-worker-" in n for p in ps)
    assert admitted(worker["spec"]["ingress"][0]["from"], pod_labels(docs)) == {
        "qscale-prometheus"}


def test_can_be_disabled(render: Render) -> None:
    assert not by_kind(render("--set", "networkPolicy.enabled=false"), "NetworkPolicy")
