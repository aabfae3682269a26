"""The docs' Kubernetes examples, read from the markdown and rendered against the chart.

The chart README's example values are valid and do what the text around them says (two
pools, the reports pool's grace period, its autoscaling range, the user's module
imported next to the demo tasks `helm test` needs); running them needs an image with
`myapp` in it, which the README's deploy section builds and runs
(tests/e2e/test_newcomer_install.py). The README's producer Job carries the labels the
broker's NetworkPolicy admits, which the test cluster's CNI does not enforce. The
producers' table (Secrets and variables, per broker and release name) matches what the
chart gives the workers, RabbitMQ included, which no docs test runs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, Render, by_kind, named
from tests.chart.test_workers import env_of, workers
from tests.docs.markdown import section

README = CHART.parents[1] / "README.md"


def test_adding_your_own_tasks_values_render_as_described(render: Render,
                                                          tmp_path: Path) -> None:
    examples = [b for b in section(CHART / "README.md", "Adding your own tasks")
                if b.file == "values-pools.yaml"]
    assert len(examples) == 1, "the example values-pools.yaml block is gone (update me)"
    values = tmp_path / "values-pools.yaml"
    values.write_text(examples[0].text)
    docs = render(values=[values])

    pools = workers(docs)
    assert set(pools) == {"default", "reports"}
    for deployment in pools.values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "registry.example.com/myapp-workers:1.4.2"
        imports = env_of(deployment)["QSCALE_IMPORTS"].split(",")
        assert "myapp.tasks" in imports
        assert "worker.demo_tasks" in imports  # kept: `helm test` sends qscale.demo.add
    reports = pools["reports"]
    assert env_of(reports)["QSCALE_QUEUES"] == "reports"
    assert env_of(reports)["QSCALE_CONCURRENCY"] == "1"
    # "drainSeconds: 300  # long tasks: the grace period follows (310 s)"
    assert "(310 s)" in examples[0].text
    assert reports["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 310
    wps = {w["spec"]["targetRef"]["name"]: w["spec"] for w in by_kind(docs, "WorkerPool")}
    assert wps[reports["metadata"]["name"]]["minReplicas"] == 0
    assert wps[reports["metadata"]["name"]]["maxReplicas"] == 5
    # "its own Deployment, PDB and WorkerPool"
    assert len(by_kind(docs, "PodDisruptionBudget")) == 2
    assert len(by_kind(docs, "WorkerPool")) == 2
    tests = [d for d in docs if d["kind"] == "Pod"
             and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    assert tests, "no helm test pod rendered with the README's values"


def test_the_deploy_sections_producer_is_admitted_by_the_brokers_network_policy(
        render: Render) -> None:
    """The kind cluster's CNI does not enforce NetworkPolicy, so the newcomer test cannot
    tell; here: the README's producer Job carries labels the broker's policy admits, on
    the port and Secret the chart renders."""
    jobs = [b for b in section(README, "Deploying on your own cluster")
            if b.file == "producer-job.yaml"]
    assert len(jobs) == 1, "the README's producer-job.yaml block is gone (update me)"
    job = yaml.safe_load(jobs[0].text)
    labels = job["spec"]["template"]["metadata"]["labels"]
    docs = render()
    redis_pod = named(docs, "StatefulSet", "qscale-redis")["spec"]["template"]["metadata"]
    policies = [p for p in by_kind(docs, "NetworkPolicy")
                if p["spec"]["podSelector"]["matchLabels"].items()
                <= redis_pod["labels"].items()]
    assert policies, "no NetworkPolicy selects the Redis pod (is it still on by default?)"
    admitted = [peer for p in policies for rule in p["spec"].get("ingress", [])
                for peer in rule.get("from", [])
                if "podSelector" in peer and "namespaceSelector" not in peer
                and peer["podSelector"]["matchLabels"].items() <= labels.items()]
    assert admitted, f"labels {labels} are admitted by none of {policies}"
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(e["valueFrom"]["secretKeyRef"] for e in env if e["name"] == "QSCALE_BROKER_URL")
    secret = named(docs, "Secret", ref["name"])
    assert ref["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}


def _rendered(helm: str, release: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run([helm, "template", release, str(CHART), "--namespace", "apps",
                          *args], capture_output=True, text=True, timeout=120, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.mark.parametrize(("release", "prefix"), [("qscale", "qscale"),
                                                 ("myapp", "myapp-qscale")])
def test_the_producers_table_names_what_the_workers_get(helm: str, release: str,
                                                        prefix: str) -> None:
    """README, "Sending tasks from your application": a producer needs what the workers of
    the queue have; the table names the Secrets (`<release>-redis`, `<release>-rabbitmq`,
    `<release>-qscale` when the name lacks qscale) and the queue-argument variables."""
    text = README.read_text()
    rows = {row.split("|")[1].strip(): row for row in
            text.split("## Sending tasks from your application", 1)[1].split("\n## ", 1)[0]
            .splitlines() if row.startswith("| ") and not row.startswith("| what")}
    assert "`<release>-qscale` when the name does not contain `qscale`" in \
        rows["the broker URL, with its password"]
    queue_vars = set(re.findall(r"`(QSCALE_[A-Z_]+)`", rows["RabbitMQ queue arguments"]))
    for broker, url_secret in (("redis", f"{prefix}-redis"),
                               ("rabbitmq", f"{prefix}-rabbitmq")):
        docs = _rendered(helm, release, "--set", f"broker.type={broker}")
        env = env_of(workers(docs)["default"])
        assert env["QSCALE_BROKER_URL"] == {"secretKeyRef": {"name": url_secret, "key": "url"}}
        if broker == "rabbitmq":
            assert env["QSCALE_RESULT_URL"] == {
                "secretKeyRef": {"name": f"{prefix}-redis", "key": "url"}}
            assert queue_vars == {"QSCALE_AMQP_QUEUE_TYPE", "QSCALE_MAX_PRIORITY",
                                  "QSCALE_MAX_REDELIVERIES"}
            assert queue_vars <= env.keys()
