"""Publishing for RabbitMQ: every publish waits for its confirm; refusals are per message.

Mixed into AmqpBroker. Messages go out on the session's `pub` channel, mandatory and
in confirm mode: returning means the message is on the broker. The queue a message
goes to must exist (the default exchange drops messages for missing queues): an
existing queue is used whatever its arguments (a chain step may go to another
team's priority or quorum queue; redeclaring it with ours would be refused and, on
a shared channel, would cost every delivery the worker holds); a missing work queue
is declared with this client's layout, a missing delay bucket with its TTL.
Anything RabbitMQ refuses about one message (a nack, an unroutable message, a queue
this user may not create) raises MessageRefused: the connection stays.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from worker.brokers._amqp_layout import (
    check_priority,
    delay_bucket_ms,
    delay_queue,
    queue_arguments,
)
from worker.brokers._amqp_session import CONFIRM_WINDOW, AmqpSession

REDECLARE_AFTER = 30.0      # seconds; keeps a delay bucket from expiring under us


class AmqpPublishing:
    """publish / publish_many of the Broker interface, and the targets they need."""

    if TYPE_CHECKING:  # provided by AmqpBroker
        _session: AmqpSession
        _targets: dict[str, float]
        max_priority: int
        queue_type: str
        max_redeliveries: int

        def _op(self, what: str, budget: float = 0.0,
                publishing: bool = False) -> AbstractContextManager[Any]: ...

    def _target(self, queue: str, arguments: dict[str, Any] | None,
                refresh: float | None = None) -> str:
        """`queue`, made sure to exist (again after `refresh` s: buckets expire)."""
        seen = self._targets.get(queue)
        if seen is None or (refresh is not None and time.monotonic() - seen >= refresh):
            self._session.declare_target(queue, arguments)
            self._targets[queue] = time.monotonic()
        return queue

    def _work_target(self, queue: str) -> str:
        return self._target(queue, queue_arguments(queue, self.max_priority, self.queue_type,
                                                   self.max_redeliveries))

    def _bucket_target(self, queue: str, delay: float) -> str:
        """The TTL queue a message waits in for `delay` s before it enters `queue`."""
        self._work_target(queue)  # where it goes once the delay is over
        bucket = delay_bucket_ms(delay)
        return self._target(delay_queue(queue, bucket), {
            "x-message-ttl": bucket, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
            "x-expires": bucket * 2 + 60_000}, refresh=REDECLARE_AFTER)

    def _target_for(self, queue: str, delay: float) -> str:
        return self._bucket_target(queue, delay) if delay * 1000 >= 1 else \
            self._work_target(queue)

    def publish(self, queue: str, body: bytes, *, delay: float = 0.0,
                priority: int | None = None) -> None:
        check_priority(priority)
        with self._op("publish", publishing=True):
            self._session.send(self._target_for(queue, delay), body, priority)
            self._session.wait_confirms()

    def publish_many(self, queue: str, bodies: Sequence[bytes], *, delay: float = 0.0,
                     priority: int | None = None) -> None:
        check_priority(priority)
        with self._op("publish_many", publishing=True):
            target = self._target_for(queue, delay)
            for start in range(0, len(bodies), CONFIRM_WINDOW):
                with self._session.corked():
                    for body in bodies[start:start + CONFIRM_WINDOW]:
                        self._session.send(target, body, priority)
                self._session.drain_available()
            self._session.wait_confirms()
