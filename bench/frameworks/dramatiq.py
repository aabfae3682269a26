"""Dramatiq: P processes x T threads; it acks after processing, always."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from bench.frameworks.base import Framework, chunks, python_bin
from bench.workload import BROKER_URL_ENV

ACTORS = {"noop": "bench_noop", "cpu": "bench_cpu"}


def pika_url(url: str) -> str:
    """pika reads the vhost from the path and wants "/" spelled %2F (kombu accepts "//")."""
    parts = urlsplit(url)
    if parts.scheme.startswith("amqp") and parts.path in ("", "/", "//"):
        return urlunsplit(parts._replace(path="/%2F"))
    return url


class DramatiqFramework(Framework):
    name = "dramatiq"
    thread_options = (1, 2, 8)
    note = "-p P -t T, best T of 1/2/8 reported; acks after processing; no results"

    def _broker(self) -> dramatiq.Broker:
        url = pika_url(self.target.url)
        if self.target.kind == "redis":
            return RedisBroker(url=url)  # type: ignore[no-untyped-call]
        return RabbitmqBroker(url=url)

    def preload(self, queue: str, workload: str, count: int) -> None:
        broker = self._broker()
        try:
            broker.declare_queue(queue)
            for block in chunks(count):
                for seq in block:
                    broker.enqueue(dramatiq.Message(queue_name=queue,
                                                    actor_name=ACTORS[workload],
                                                    args=(seq,), kwargs={}, options={}))
        finally:
            broker.close()

    def worker_command(self, queue: str, processes: int, threads: int) -> list[str]:
        return [python_bin(), "-m", "dramatiq", "bench.apps.dramatiq_app",
                "-p", str(processes), "-t", str(threads), "-Q", queue,
                "--worker-shutdown-timeout", "10000"]

    def worker_env(self, queue: str, processes: int) -> dict[str, str]:
        return {BROKER_URL_ENV: pika_url(self.target.url)}

    def unfinished_redis(self, queue: str) -> int:
        # Message bodies live in the `.msgs` hash from enqueue until the ack.
        client = self.redis()
        return int(client.hlen(f"dramatiq:{queue}.msgs")) + int(
            client.hlen(f"dramatiq:{queue}.DQ.msgs"))

    def rabbit_queues(self, queue: str) -> tuple[str, ...]:
        return (queue, f"{queue}.DQ")
