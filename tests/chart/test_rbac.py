"""The controller's Role equals the canonical rules in controller/rbac.yaml."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.conftest import REPO_ROOT, Render, by_kind, helm_template, named

CANONICAL = REPO_ROOT / "controller" / "rbac.yaml"


def normalize(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """Rules as (group, resource, verb, resourceName) atoms, so grouping doesn't matter."""
    atoms = set()
    for rule in rules:
        for group in rule.get("apiGroups", [""]):
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or ["*"]:
                        atoms.add((group, resource, verb, name))
    return atoms


def canonical_rules() -> list[dict[str, Any]]:
    if not CANONICAL.exists():
        pytest.fail(f"{CANONICAL} is missing: the controller's canonical RBAC rules",
                    pytrace=False)
    roles = [d for d in yaml.safe_load_all(CANONICAL.read_text())
             if d and d.get("kind") in ("Role", "ClusterRole")]
    assert roles, f"no Role in {CANONICAL}"
    return [rule for role in roles for rule in role["rules"]]


def test_chart_role_mirrors_controller_rbac(render: Render) -> None:
    docs = render()
    role = named(docs, "Role", "qscale-controller")
    chart = normalize(role["rules"])
    canonical = normalize(canonical_rules())
    # The chart narrows the Secret rule to the broker Secret; pods/proxy is only for
    # running the controller outside the cluster and stays out of the chart.
    canonical_secrets = {a for a in canonical if a[1] == "secrets"}
    chart_secrets = {a for a in chart if a[1] == "secrets"}
    def unnamed(atoms: set[tuple[str, str, str, str]]) -> set[tuple[str, str, str]]:
        return {(g, r, v) for g, r, v, _ in atoms}

    assert unnamed(chart_secrets) == unnamed(canonical_secrets)
    assert {n for *_, n in chart_secrets} == {"qscale-redis"}
    out_of_cluster_only = {a for a in canonical if a[1] == "pods/proxy"}
    assert chart - chart_secrets == canonical - canonical_secrets - out_of_cluster_only


def test_binding_and_service_account(render: Render) -> None:
    docs = render()
    binding = named(docs, "RoleBinding", "qscale-controller")
    assert binding["roleRef"]["name"] == "qscale-controller"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "qscale-controller",
                                    "namespace": "qscale"}]
    controller = named(docs, "Deployment", "qscale-controller")
    assert controller["spec"]["template"]["spec"]["serviceAccountName"] == "qscale-controller"
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")


def test_two_controllers_need_leader_election(helm: str) -> None:
    result = helm_template(helm, "--set", "controller.replicas=2",
                           "--set", "controller.leaderElection.enabled=false", check=False)
    assert result.returncode != 0
    assert "leaderElection" in result.stderr
