"""Worker Deployments: grace period above the drain deadline, env, probes, pools."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.chart.conftest import CHART, Render, by_kind, helm_template, named


def workers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["labels"]["qscale.io/pool"]: d for d in by_kind(docs, "Deployment")
            if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"}


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(("drain", "margin"), [(25, 10), (120, 5), (0.5, 30)])
def test_grace_period_is_drain_plus_margin(render: Render, drain: float, margin: int) -> None:
    # --set-json: plain --set turns 0.5 into a string.
    docs = render("--set-json", f"worker.drainSeconds={drain}",
                  "--set", f"worker.terminationGraceMarginSeconds={margin}")
    deployment = workers(docs)["default"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain
    assert grace == int(-(-drain // 1)) + margin
    assert env_of(deployment)["QSCALE_DRAIN_SECONDS"] == str(drain)
    # Busy pods stay protected from scale-down far longer than a pod's grace period:
    # the deadline is a valve for stuck tasks, not the drain of a terminating pod.
    pool = by_kind(docs, "WorkerPool")[0]
    assert pool["spec"]["drainDeadlineSeconds"] == 900
    assert pool["spec"]["drainDeadlineSeconds"] > grace


def test_margin_below_five_seconds_is_rejected(helm: str) -> None:
    result = helm_template(helm, "--set", "worker.terminationGraceMarginSeconds=1", check=False)
    assert result.returncode != 0
    assert "terminationGraceMarginSeconds" in result.stderr


def test_pools_override_worker_defaults(render: Render) -> None:
    docs = render(values=[CHART / "ci" / "redis-values.yaml"])
    pools = workers(docs)
    assert set(pools) == {"default", "reports"}
    reports = pools["reports"]
    env = env_of(reports)
    assert env["QSCALE_QUEUES"] == "reports,reports-low"
    assert env["QSCALE_CONCURRENCY"] == "1"
    assert reports["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 130
    assert env_of(pools["default"])["QSCALE_CONCURRENCY"] == "2"
    wps = {w["spec"]["targetRef"]["name"]: w["spec"] for w in by_kind(docs, "WorkerPool")}
    assert wps[reports["metadata"]["name"]]["minReplicas"] == 0
    assert wps[reports["metadata"]["name"]]["queues"] == ["reports", "reports-low"]
    assert len(by_kind(docs, "PodDisruptionBudget")) == 2


def test_worker_env_probes_and_scrape_annotations(render: Render) -> None:
    deployment = workers(render())["default"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    # args, not command: the image's ENTRYPOINT (tini) must stay PID 1 to reap the
    # processes a hard-killed task leaves behind.
    assert "command" not in container
    assert container["args"] == ["python", "-m", "worker", "run"]
    env = env_of(deployment)
    assert env["QSCALE_BROKER_URL"] == {"secretKeyRef": {"name": "qscale-redis", "key": "url"}}
    assert "QSCALE_RESULT_URL" not in env  # results share the Redis broker
    assert env["QSCALE_IMPORTS"] == "worker.demo_tasks"
    assert env["QSCALE_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    spread = pod["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"]["qscale.io/pool"] == "default"
    # The controller owns replicas: a `helm upgrade` must not reset them.
    assert "replicas" not in deployment["spec"]


def test_user_imports_and_no_demo_tasks(render: Render) -> None:
    env = env_of(workers(render("--set", "worker.imports={myapp.tasks,myapp.reports}",
                                "--set", "worker.demoTasks=false"))["default"])
    assert env["QSCALE_IMPORTS"] == "myapp.tasks,myapp.reports"


def test_without_controller_replicas_are_static(render: Render) -> None:
    docs = render("--set", "controller.enabled=false", "--set", "worker.replicas=3")
    assert workers(docs)["default"]["spec"]["replicas"] == 3
    assert not by_kind(docs, "WorkerPool")


def test_rabbitmq_workers_get_the_results_redis(render: Render) -> None:
    docs = render(values=[CHART / "ci" / "rabbitmq-values.yaml"])
    env = env_of(workers(docs)["default"])
    assert env["QSCALE_BROKER_URL"] == {"secretKeyRef": {"name": "qscale-rabbitmq", "key": "url"}}
    assert env["QSCALE_RESULT_URL"] == {"secretKeyRef": {"name": "qscale-redis", "key": "url"}}
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "qscale-rabbitmq") in kinds
    assert ("StatefulSet", "qscale-redis") in kinds


def test_rabbitmq_without_results_runs_no_redis(render: Render) -> None:
    docs = render("--set", "broker.type=rabbitmq", "--set", "results.enabled=false")
    assert not [d for d in docs if d["metadata"]["name"] == "qscale-redis"]
    assert "QSCALE_RESULT_URL" not in env_of(workers(docs)["default"])


def test_external_broker_reads_the_users_secret(render: Render) -> None:
    docs = render(values=[CHART / "ci" / "external-broker-values.yaml"])
    assert not by_kind(docs, "StatefulSet")
    # No broker Secret of ours; the only Secret is the controller's control token.
    assert [d["metadata"]["name"] for d in by_kind(docs, "Secret")] == ["qscale-control-token"]
    env = env_of(workers(docs)["default"])
    assert env["QSCALE_BROKER_URL"] == {"secretKeyRef": {"name": "my-broker", "key": "url"}}
    assert env["QSCALE_RESULT_URL"] == {"secretKeyRef": {"name": "my-broker", "key": "result-url"}}
    pool = by_kind(docs, "WorkerPool")[0]
    assert pool["spec"]["broker"] == {"secretRef": {"name": "my-broker", "key": "url"}}


def test_redis_secret_holds_password_and_url(render: Render) -> None:
    docs = render("--set", "redis.auth.password=abc123")
    data = named(docs, "Secret", "qscale-redis")["data"]
    decoded = {k: base64.b64decode(v).decode() for k, v in data.items()}
    assert decoded == {"password": "abc123",
                       "url": "redis://:abc123@qscale-redis.qscale.svc:6379/0"}
    redis = named(docs, "StatefulSet", "qscale-redis")["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][redis["args"].index("--appendonly") + 1] == "yes"
    assert redis["args"][redis["args"].index("--appendfsync") + 1] == "everysec"
    assert redis["args"][redis["args"].index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]


def test_generated_password_is_random_and_url_safe(render: Render) -> None:
    data = named(render(), "Secret", "qscale-redis")["data"]
    password = base64.b64decode(data["password"]).decode()
    assert len(password) == 32 and password.isalnum()


@pytest.mark.parametrize("args", [(), ("--set", "broker.type=rabbitmq",
                                       "--set", "results.enabled=false")],
                         ids=["with-results", "without-results"])
def test_helm_test_pod_script_compiles(render: Render, args: tuple[str, ...]) -> None:
    pod = named(render(*args), "Pod", "qscale-test-roundtrip")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    compile(script, "test-roundtrip", "exec")
    assert ("handle.get(" in script) is (not args)
