"""The control token: one chart-made Secret, read by the controller and the workers of
autoscaled pools (POST /cordon needs it); off with autoscaling.cordon.enabled=false."""

from __future__ import annotations

import base64
from typing import Any

from tests.chart.conftest import Render, by_kind, helm_template, named
from tests.chart.test_workers import env_of, workers

TOKEN_REF = {"secretKeyRef": {"name": "qscale-control-token", "key": "token"}}


def _controller_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return env_of(named(docs, "Deployment", "qscale-controller"))


def _token(docs: list[dict[str, Any]]) -> str:
    data = named(docs, "Secret", "qscale-control-token")["data"]
    assert set(data) == {"token"}
    return base64.b64decode(data["token"]).decode()


def test_controller_and_workers_share_a_generated_token(render: Render) -> None:
    docs = render()
    token = _token(docs)
    assert len(token) == 40 and token.isalnum()
    assert _controller_env(docs)["QSCALE_CONTROL_TOKEN"] == TOKEN_REF
    assert env_of(workers(docs)["default"])["QSCALE_CONTROL_TOKEN"] == TOKEN_REF
    assert _token(render("--set", "autoscaling.cordon.token=abc123")) == "abc123"


def test_cordon_off_means_no_token_anywhere(render: Render) -> None:
    docs = render("--set", "autoscaling.cordon.enabled=false")
    assert "qscale-control-token" not in {d["metadata"]["name"] for d in by_kind(docs, "Secret")}
    assert "QSCALE_CONTROL_TOKEN" not in _controller_env(docs)
    assert "QSCALE_CONTROL_TOKEN" not in env_of(workers(docs)["default"])
    # Without the controller nobody cordons: the workers get no token either.
    docs = render("--set", "controller.enabled=false")
    assert not [d for d in by_kind(docs, "Secret") if d["metadata"]["name"].endswith("token")]
    assert "QSCALE_CONTROL_TOKEN" not in env_of(workers(docs)["default"])


def test_only_autoscaled_pools_get_the_token(render: Render) -> None:
    docs = render("--set", "pools[0].name=fixed", "--set", "pools[0].queues={a}",
                  "--set", "pools[0].autoscaling.enabled=false",
                  "--set", "pools[1].name=scaled", "--set", "pools[1].queues={b}")
    pools = workers(docs)
    assert "QSCALE_CONTROL_TOKEN" not in env_of(pools["fixed"])
    assert env_of(pools["scaled"])["QSCALE_CONTROL_TOKEN"] == TOKEN_REF


def test_schema_keeps_the_token_simple_and_chart_wide(helm: str) -> None:
    bad = helm_template(helm, "--set", "autoscaling.cordon.token=a b;c", check=False)
    assert bad.returncode != 0 and "token" in bad.stderr
    per_pool = helm_template(helm, "--set", "pools[0].name=p", "--set", "pools[0].queues={q}",
                             "--set", "pools[0].autoscaling.cordon.enabled=false", check=False)
    assert per_pool.returncode != 0 and "cordon" in per_pool.stderr
