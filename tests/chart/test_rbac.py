"""Least privilege, derived: the controller's Roles equal the API calls its code makes
(tests/chart/rbac_derive.py), in controller/rbac.yaml and in the chart's render."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.conftest import REPO_ROOT, Render, by_kind, helm_template, named
from tests.chart.rbac_derive import derived_calls

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


def canonical_roles() -> dict[str, list[dict[str, Any]]]:
    if not CANONICAL.exists():
        pytest.fail(f"{CANONICAL} is missing: the controller's canonical RBAC rules",
                    pytrace=False)
    roles = {d["metadata"]["name"]: d["rules"] for d in yaml.safe_load_all(CANONICAL.read_text())
             if d and d.get("kind") in ("Role", "ClusterRole")}
    assert roles, f"no Role in {CANONICAL}"
    return roles


def canonical_rules() -> list[dict[str, Any]]:
    return [rule for rules in canonical_roles().values() for rule in rules]


def unnamed(atoms: set[tuple[str, str, str, str]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for g, r, v, _ in atoms}


# Resources the Role must restrict by name (create cannot be, so it must not be called).
NAMED = {"leases", "secrets"}


def test_canonical_roles_equal_the_calls_the_code_makes() -> None:
    derived = derived_calls()
    roles = canonical_roles()
    main, proxy = normalize(roles["qscale-controller"]), normalize(
        roles["qscale-controller-pod-proxy"])
    wanted = set(derived)
    where = "\n".join(f"  {a}: {sorted(w)[0]}" for a, w in sorted(derived.items()))
    assert unnamed(main) == {a for a in wanted if a[1] != "pods/proxy"}, \
        f"controller/rbac.yaml differs from the calls under controller/:\n{where}"
    assert unnamed(proxy) == {a for a in wanted if a[1] == "pods/proxy"}
    for group, resource, verb, name in main:
        assert (resource in NAMED) == (name != "*"), (group, resource, verb, name)
    assert not {a for a in wanted if a[1] in NAMED and a[2] in ("create", "list", "watch")}, \
        "named resources must not be created, listed or watched (RBAC cannot name those)"


def test_chart_role_mirrors_controller_rbac(render: Render) -> None:
    docs = render()
    role = named(docs, "Role", "qscale-controller")
    chart = normalize(role["rules"])
    canonical = normalize(canonical_rules())
    # The chart narrows the Secret rule to the broker Secret; pods/proxy is only for
    # running the controller outside the cluster and stays out of the chart.
    canonical_named = {a for a in canonical if a[1] in NAMED}
    chart_named = {a for a in chart if a[1] in NAMED}
    assert unnamed(chart_named) == unnamed(canonical_named)
    assert {(r, n) for _, r, _, n in chart_named} == {("secrets", "qscale-redis"),
                                                       ("leases", "qscale-controller")}
    out_of_cluster_only = {a for a in canonical if a[1] == "pods/proxy"}
    assert chart - chart_named == canonical - canonical_named - out_of_cluster_only


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
