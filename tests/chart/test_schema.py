"""values.schema.json rejects typos and bad values with a message naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.chart.conftest import CHART, CI_VALUES, REPO_ROOT, helm_template


@pytest.mark.parametrize(("flag", "mentions"), [
    ("workr.concurrency=2", "workr"),                          # top-level typo
    ("worker.concurency=2", "concurency"),                     # nested typo
    ("redis.persistence.sise=1Gi", "sise"),                    # deep typo
    ("pools[0].drainSecond=5", "drainSecond"),                 # typo inside a pool
    ("autoscaling.maxReplica=3", "maxReplica"),
    ("monitoring.prometheus.enbled=false", "enbled"),
    ("broker.type=kafka", "/broker/type"),                     # enum
    ("worker.concurrency=0", "concurrency"),                   # minimum
    ("redis.auth.password=has@sign", "password"),              # would break the URL
    ("broker.type=external", "existingSecret"),                # external needs its Secret
])
def test_schema_rejects(helm: str, flag: str, mentions: str) -> None:
    result = helm_template(helm, "--set", flag, check=False)
    assert result.returncode != 0, f"--set {flag} was accepted"
    assert mentions in result.stderr, result.stderr


def test_pool_needs_name_and_queues(helm: str) -> None:
    result = helm_template(helm, "--set", "pools[0].name=x", "--set", "pools[0].queues=null",
                           check=False)
    assert result.returncode != 0
    assert "queues" in result.stderr


def test_defaults_and_ci_values_are_accepted(helm: str) -> None:
    assert helm_template(helm).returncode == 0
    for path in CI_VALUES:
        assert helm_template(helm, values=[path]).returncode == 0, path.name


def leaf_keys(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [k for key, value in node.items() for k in leaf_keys(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def test_readme_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    # A documented parent (e.g. `podSecurityContext`) covers its children.
    missing = [key for key in leaf_keys(values)
               if not any(f"`{key[:i]}`" in readme for i in range(len(key), 0, -1)
                          if i == len(key) or key[i] == ".")]
    assert not missing, f"values missing from helm/qscale/README.md: {missing}"


def test_schema_and_readme_are_generated_from_the_sources() -> None:
    for script in ("chart-schema.py", "chart-readme.py"):
        result = subprocess.run([sys.executable, str(REPO_ROOT / "hack" / script), "--check"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
