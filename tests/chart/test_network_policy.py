"""NetworkPolicy: only this release's broker clients reach the broker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.conftest import CHART, Render, by_kind


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


@pytest.mark.parametrize("values", [(), (CHART / "ci" / "rabbitmq-values.yaml",)],
                         ids=["redis", "rabbitmq"])
def test_only_clients_reach_the_broker(render: Render, values: tuple[Any, ...]) -> None:
    docs = render(values=values)
    policies = by_kind(docs, "NetworkPolicy")
    assert policies
    labels = pod_labels(docs)
    for policy in policies:
        targets = [n for n, lab in labels.items()
                   if matches(policy["spec"]["podSelector"]["matchLabels"], lab)]
        assert len(targets) == 1, (policy["metadata"]["name"], targets)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = policy["spec"]["ingress"]
        (peer,) = rule["from"]
        selector = peer["podSelector"]["matchLabels"]
        allowed = {n for n, lab in labels.items() if matches(selector, lab)}
        expected = {n for n in labels if "-worker-" in n or n.endswith(
            ("-controller", "-prometheus", "-test-roundtrip"))}
        assert allowed == expected, policy["metadata"]["name"]
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "qscale"
    brokers = {n for n in labels if n.endswith(("-redis", "-rabbitmq"))}
    assert {p["metadata"]["name"] for p in policies} == brokers


def test_can_be_disabled(render: Render) -> None:
    assert not by_kind(render("--set", "networkPolicy.enabled=false"), "NetworkPolicy")
