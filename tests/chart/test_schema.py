"""values.schema.json rejects typos and bad values with a message naming the key."""

from __future__ import annotations

import pytest

from tests.chart.conftest import CI_VALUES, helm_template


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
