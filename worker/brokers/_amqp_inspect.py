"""Inspection for RabbitMQ: queue stats and dead letters (`python -m worker status`,
`python -m worker dlq list|requeue|purge`).

Mixed into AmqpBroker: dead letters sit in the durable `<queue>.dead`, each with
the reason in headers (ours) or in x-death (a quorum queue's delivery limit).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from worker.brokers._amqp_layout import as_bytes, dead_letter_of, dead_queue
from worker.brokers._amqp_session import CONFIRM_WINDOW, AmqpSession
from worker.brokers._rabbitmq_api import ManagementApi
from worker.brokers.base import DeadLetter, QueueStats


class AmqpInspection:
    """stats / dead_letters / requeue_dead / purge_dead of the Broker interface."""

    if TYPE_CHECKING:  # provided by AmqpBroker
        _session: AmqpSession
        _api: ManagementApi
        quorum: bool
        max_redeliveries: int

        def _op(self, what: str, budget: float = 0.0) -> AbstractContextManager[Any]: ...
        def _declare_queue(self, queue: str) -> None: ...
        def _declare_dead(self, queue: str) -> None: ...

    def stats(self, queue: str) -> QueueStats:
        with self._op("stats"):  # read-only: reports on queues of any layout, creates none
            ready = self._session.message_count(queue) or 0
            dead = self._session.message_count(dead_queue(queue)) or 0
        delayed = self._api.total_messages(f"qscale.delay.{queue}.")
        return QueueStats(queue=queue, ready=ready, in_flight=self._api.unacknowledged(queue),
                          delayed=delayed or 0, dead=dead)

    def _get_dead(self, queue: str, limit: int) -> list[Any]:
        got: list[Any] = []
        while len(got) < limit:
            message = self._session.channel.basic_get(dead_queue(queue), no_ack=False)
            if message is None:
                break
            got.append(message)
        return got

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        with self._op("dead_letters") as channel:
            self._declare_dead(queue)
            got = self._get_dead(queue, limit)
            for message in got:
                channel.basic_reject(message.delivery_tag, requeue=True)
        # RabbitMQ's own limit (the backstop) is one above ours: see queue_arguments.
        delivery_limit = self.max_redeliveries + 1 if self.quorum and self.max_redeliveries \
            else 0
        return [dead_letter_of(queue, m, delivery_limit) for m in got]

    def requeue_dead(self, queue: str, limit: int | None = None,
                     before: Callable[[bytes], None] | None = None) -> int:
        moved = 0
        with self._op("requeue_dead") as channel:
            self._declare_queue(queue)
            self._declare_dead(queue)
            while limit is None or moved < limit:
                want = CONFIRM_WINDOW if limit is None else min(CONFIRM_WINDOW, limit - moved)
                got = self._get_dead(queue, want)
                for message in got:
                    if before is not None:
                        before(as_bytes(message.body))
                    self._session.send(queue, as_bytes(message.body),
                                       message.properties.get("priority"))
                self._session.wait_confirms()
                for message in got:
                    channel.basic_ack(message.delivery_tag)
                moved += len(got)
                if len(got) < want:
                    break
        return moved

    def purge_dead(self, queue: str) -> int:
        with self._op("purge_dead") as channel:
            self._declare_dead(queue)
            return int(channel.queue_purge(dead_queue(queue)) or 0)
