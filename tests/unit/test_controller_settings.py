"""Controller settings and pool specs: bad input gives one clear line naming the field."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from controller.pool import SpecError, pool_from_settings, pool_from_workerpool
from controller.settings import load_settings
from worker.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("QSCALE_CONTROLLER_"):
            monkeypatch.delenv(name)


def test_defaults_are_fast_and_leader_elected() -> None:
    settings = load_settings()
    assert settings.poll_interval_seconds == 1.0
    assert settings.leader_election
    assert (settings.lease_duration_seconds, settings.lease_renew_seconds) == (15.0, 5.0)
    assert settings.pool_source == "workerpools"


@pytest.mark.parametrize(("env", "variable"), [
    ({"QSCALE_CONTROLLER_POLL_INTERVAL_SECONDS": "0"}, "QSCALE_CONTROLLER_POLL_INTERVAL_SECONDS"),
    ({"QSCALE_CONTROLLER_MODE": "fastest"}, "QSCALE_CONTROLLER_MODE"),
    ({"QSCALE_CONTROLLER_POD_STATE_ACCESS": "ssh"}, "QSCALE_CONTROLLER_POD_STATE_ACCESS"),
    ({"QSCALE_CONTROLLER_POOL_SOURCE": "env"}, "QSCALE_CONTROLLER_BROKER_URL"),
    ({"QSCALE_CONTROLLER_POOL_SOURCE": "env", "QSCALE_CONTROLLER_BROKER_URL": "redis://h/0"},
     "QSCALE_CONTROLLER_DEPLOYMENT"),
    ({"QSCALE_CONTROLLER_BROKER_URL": "http://x"}, "QSCALE_CONTROLLER_BROKER_URL"),
    ({"QSCALE_CONTROLLER_MIN_REPLICAS": "5", "QSCALE_CONTROLLER_MAX_REPLICAS": "2"},
     "QSCALE_CONTROLLER_MIN_REPLICAS"),
    ({"QSCALE_CONTROLLER_LEASE_RENEW_SECONDS": "20"}, "QSCALE_CONTROLLER_LEASE_RENEW_SECONDS"),
    ({"QSCALE_CONTROLLER_ON_ERROR": "fallback"}, "QSCALE_CONTROLLER_FALLBACK_REPLICAS"),
    ({"QSCALE_CONTROLLER_QUEUES": " , "}, "QSCALE_CONTROLLER_QUEUES"),
])
def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                        variable: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(variable + ":"), message
    assert "\n" not in message


def test_env_pool_carries_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"POOL_SOURCE": "env", "BROKER_URL": "redis://127.0.0.1:6379/0",
                       "DEPLOYMENT": "workers", "QUEUES": "a, b", "MIN_REPLICAS": "0",
                       "MAX_REPLICAS": "7", "CONCURRENCY": "4", "NAMESPACE": "jobs"}.items():
        monkeypatch.setenv("QSCALE_CONTROLLER_" + key, value)
    pool = pool_from_settings(load_settings())
    assert pool.queues == ("a", "b")
    assert (pool.namespace, pool.deployment, pool.concurrency) == ("jobs", "workers", 4)
    assert (pool.policy.min_replicas, pool.policy.max_replicas) == (0, 7)


def test_cli_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"QSCALE_CONTROLLER_POOL_SOURCE": "env", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "controller", "run", "--once"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "QSCALE_CONTROLLER_BROKER_URL" in lines[0], proc.stderr


def _workerpool(**spec: object) -> dict[str, object]:
    base: dict[str, object] = {"queues": ["q"], "targetRef": {"name": "workers"},
                               "broker": {"url": "redis://127.0.0.1:6379/0"}}
    base.update(spec)
    return {"metadata": {"name": "p", "namespace": "ns", "generation": 3,
                         "annotations": {"qscale.io/paused": "true"}}, "spec": base}


def test_workerpool_parses() -> None:
    pool = pool_from_workerpool(_workerpool(concurrency=4, maxReplicas=20, mode="latency",
                                            scaleDownWindowSeconds=5))
    assert pool.key == "ns/p" and pool.paused and pool.generation == 3
    assert pool.policy.mode == "latency" and pool.policy.max_replicas == 20
    assert pool.policy.scale_down_window_seconds == 5.0
    assert pool.concurrency == 4


@pytest.mark.parametrize(("spec", "field"), [
    ({"queues": []}, "spec.queues"),
    ({"targetRef": {}}, "spec.targetRef.name"),
    ({"broker": {}}, "spec.broker"),
    ({"broker": {"url": "ftp://x"}}, "spec.broker.url"),
    ({"minReplicas": 5, "maxReplicas": 2}, "spec.minReplicas"),
    ({"mode": "turbo"}, "spec.mode"),
    ({"concurrency": 0}, "spec.concurrency"),
    ({"onError": "fallback"}, "spec.fallbackReplicas"),
    ({"maxReplicas": "ten"}, "spec.maxReplicas"),
])
def test_bad_workerpool_names_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        pool_from_workerpool(_workerpool(**spec))
    assert str(info.value).startswith(field), str(info.value)


def test_secret_ref_broker() -> None:
    pool = pool_from_workerpool(_workerpool(broker={"secretRef": {"name": "creds"}}))
    assert pool.broker_url is None
    assert pool.broker_secret is not None and pool.broker_secret.key == "url"
