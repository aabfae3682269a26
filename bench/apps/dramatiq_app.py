"""The Dramatiq broker and actors under test (Dramatiq always acks after processing)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from bench import workload

_url = workload.broker_url()
broker: dramatiq.Broker = (
    RedisBroker(url=_url) if _url.startswith("redis")  # type: ignore[no-untyped-call]
    else RabbitmqBroker(url=_url))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", queue_name=workload.queue_name(), max_retries=0)
def noop(seq: int) -> None:
    workload.run_task("noop", seq)


@dramatiq.actor(actor_name="bench_cpu", queue_name=workload.queue_name(), max_retries=0)
def cpu(seq: int) -> None:
    workload.run_task("cpu", seq)
