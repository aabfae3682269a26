"""One source of truth for scaling defaults: PolicyConfig; the CRD, chart and env agree.

The CRD schema and values.yaml must state numbers for users to read, so they cannot
import PolicyConfig; this test fails as soon as one of them drifts from it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.policy import PolicyConfig
from controller.policyconfig import BOUNDS
from controller.pool import policy_from_spec
from controller.settings import load_settings

CHART = Path(__file__).resolve().parents[2] / "helm" / "qscale"


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()


def _crd_spec_fields() -> dict[str, Any]:
    crd = yaml.safe_load((CHART / "files" / "crds" / "workerpool.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields: dict[str, Any] = schema["properties"]["spec"]["properties"]
    return fields


def _policy_fields() -> dict[str, Any]:
    return dict(PolicyConfig().__dict__)


def test_crd_defaults_equal_policy_defaults() -> None:
    crd = _crd_spec_fields()
    policy = _policy_fields()
    checked = {name: field["default"] for name, field in crd.items()
               if "default" in field and _snake(name) in policy}
    assert {"mode", "targetWaitSeconds", "podStartupSeconds", "flapBackoffMax",
            "fallbackFailureThreshold"} <= set(checked)
    # Automatic (None) knobs carry no default: unset means "automatic", said at the knob.
    for name in ("scaleDownWindowSeconds", "cooldownSeconds"):
        assert "default" not in crd[name] and "automatic" in crd[name]["description"]
    assert checked == {name: policy[_snake(name)] for name in checked}
    # Every policy knob is in the CRD (optional ones, default None, carry no default).
    assert {_snake(name) for name in crd} >= set(policy)


def test_chart_values_equal_policy_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["autoscaling"]
    policy = _policy_fields()
    stated = {name: value for name, value in values.items() if _snake(name) in policy}
    assert stated == {name: policy[_snake(name)] for name in stated}
    assert set(policy) <= {_snake(name) for name in values}


def test_empty_spec_and_env_take_policy_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("QSCALE_CONTROLLER_")]:
        monkeypatch.delenv(name)
    assert policy_from_spec({}) == PolicyConfig()
    settings = load_settings()
    from_env = {name: getattr(settings, name) for name in _policy_fields()}
    assert from_env == _policy_fields()
    assert PolicyConfig().mode == "latency" and PolicyConfig().target_wait_seconds == 30.0


def test_new_spec_fields_reach_the_policy() -> None:
    config = policy_from_spec({"podStartupSeconds": 42, "flapBackoffMax": 0})
    assert (config.pod_startup_seconds, config.flap_backoff_max) == (42.0, 0)


def test_crd_bounds_lie_within_the_policy_bounds() -> None:
    """Total policy: everything the CRD accepts, PolicyConfig accepts (and decides on)."""
    crd = _crd_spec_fields()
    by_field = {_snake(name): field for name, field in crd.items()}
    for name, (low, high, exclusive) in BOUNDS.items():
        field = by_field[name]
        assert "minimum" in field and "maximum" in field, f"{name}: unbounded in the CRD"
        assert field["minimum"] > low if exclusive else field["minimum"] >= low, name
        assert field["maximum"] <= high, name
