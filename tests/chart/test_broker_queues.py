"""broker.queues: the queue declaration settings reach the workers and the controller
alike (RabbitMQ refuses a redeclaration with other arguments), and quorum queues
with priorities are refused at render time."""

from __future__ import annotations

from typing import Any

from tests.chart.conftest import Render, helm_template, named
from tests.chart.test_workers import env_of, workers
from worker.settings import WorkerSettings

QUEUE_ENV = ("QSCALE_AMQP_QUEUE_TYPE", "QSCALE_MAX_REDELIVERIES", "QSCALE_MAX_PRIORITY")


def _queue_env(env: dict[str, Any]) -> dict[str, Any]:
    return {name: env.get(name) for name in QUEUE_ENV}


def test_workers_and_controller_declare_queues_alike(render: Render) -> None:
    docs = render("--set", "broker.type=rabbitmq", "--set", "broker.queues.amqpQueueType=quorum",
                  "--set", "broker.queues.maxRedeliveries=3")
    want = {"QSCALE_AMQP_QUEUE_TYPE": "quorum", "QSCALE_MAX_REDELIVERIES": "3",
            "QSCALE_MAX_PRIORITY": "0"}
    assert _queue_env(env_of(named(docs, "Deployment", "qscale-controller"))) == want
    assert _queue_env(env_of(workers(docs)["default"])) == want


def test_defaults_are_the_workers_own(render: Render) -> None:
    fields = WorkerSettings.model_fields
    env = env_of(workers(render())["default"])
    assert _queue_env(env) == {
        "QSCALE_AMQP_QUEUE_TYPE": fields["amqp_queue_type"].default,
        "QSCALE_MAX_REDELIVERIES": str(fields["max_redeliveries"].default),
        "QSCALE_MAX_PRIORITY": str(fields["max_priority"].default)}


def test_quorum_with_priorities_and_bad_values_are_refused(helm: str) -> None:
    both = helm_template(helm, "--set", "broker.queues.amqpQueueType=quorum",
                         "--set", "broker.queues.maxPriority=5", check=False)
    assert both.returncode != 0 and "quorum queues have no priorities" in both.stderr
    for bad in ("broker.queues.amqpQueueType=stream", "broker.queues.maxPriority=10",
                "broker.queues.maxRedeliveries=-1"):
        result = helm_template(helm, "--set", bad, check=False)
        assert result.returncode != 0, bad
