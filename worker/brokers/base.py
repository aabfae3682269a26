"""The broker interface. Everything above it is broker-agnostic.

A worker *claims* deliveries in batches; each stays owned by that worker (leased
on Redis, unacked on RabbitMQ) until it is acked, retried, dead-lettered or
requeued. A worker that dies loses its claims back to the queue: nothing is
removed from the broker before the task's outcome is recorded.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """One claimed message. `tag` is the broker's handle for ack/retry/dead-letter.

    `dead_reason` is the broker's verdict that the message must not run again (it was
    delivered more often than QSCALE_MAX_REDELIVERIES, each time its worker died): the
    worker settles it dead, recording FAILURE, without running it. A body longer than
    the consumer's limit comes cut to its head, with `size` its real length (Redis: it
    stays whole in the broker).
    """

    queue: str
    body: bytes
    tag: str
    redelivered: bool = False
    dead_reason: str = ""
    size: int = 0  # > 0: the body was too large to hand over; this is its real length


REASON_BYTES, DETAIL_BYTES = 2048, 32_768  # a dead letter's reason and detail, at most


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (AMQP headers must fit one frame)."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[:limit - 3].decode("utf-8", "ignore") + "..."


@dataclass(frozen=True)
class QueueStats:
    """Read-only view of one queue, for `status`, metrics and the controller.

    `in_flight` is claimed-but-unfinished work (None when the broker cannot tell,
    e.g. RabbitMQ without its management API); `delayed` is scheduled retries.
    """

    queue: str
    ready: int
    in_flight: int | None
    delayed: int
    dead: int


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered message with why it failed."""

    queue: str
    body: bytes
    reason: str
    detail: str
    failed_at: float


class Broker(abc.ABC):
    """A connection to one broker, used by one thread."""

    url: str

    @abc.abstractmethod
    def publish(self, queue: str, body: bytes, *, delay: float = 0.0,
                priority: int | None = None) -> None:
        """Send one message; with `delay` > 0 it becomes ready after that many seconds."""

    def publish_many(self, queue: str, bodies: Sequence[bytes], *, delay: float = 0.0,
                     priority: int | None = None) -> None:
        """Send many messages at once (bulk enqueue); brokers override to pipeline."""
        for body in bodies:
            self.publish(queue, body, delay=delay, priority=priority)

    @abc.abstractmethod
    def claim(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        """Claim up to `max_count` ready messages, waiting at most `timeout` s for the first."""

    @abc.abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """The tasks finished: forget these messages."""

    @abc.abstractmethod
    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Give these messages back to their queues now, unchanged (shutdown, crash)."""

    @abc.abstractmethod
    def retry_later(self, delivery: Delivery, body: bytes, delay: float) -> None:
        """Atomically replace `delivery` by `body`, ready again after `delay` s."""

    @abc.abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str, detail: str = "",
                    body: bytes | None = None) -> None:
        """Atomically move `delivery` to its queue's dead-letter queue with the reason
        (keeping `body` instead of the delivery's, when given: an oversized one's head)."""

    def held(self, queues: Sequence[str]) -> list[Delivery] | None:
        """The deliveries of `queues` the broker says this connection holds (claimed and
        not settled), so a worker can hand back the ones it no longer knows of and skip
        the ones no longer its own; None when this broker cannot tell."""
        return None

    @abc.abstractmethod
    def heartbeat(self) -> None:
        """Keep this worker's claims alive; call at least every `lease / 3` seconds."""

    def wakeup_fd(self) -> int | None:
        """A descriptor that turns readable when new messages may be claimable, or None.

        Lets a caller sleep in select() instead of polling `claim` (RabbitMQ pushes
        deliveries down its socket; Redis has nothing to watch). It changes after a
        reconnect, so ask again each time.
        """
        return None

    def read_ahead(self, count: int) -> None:
        """Let the broker push up to `count` messages beyond those claimed (RabbitMQ's
        prefetch), so the next claim does not wait a round trip; no-op elsewhere."""
        return None

    def buffered(self) -> bool:
        """Whether `claim` can return messages already received, without any waiting."""
        return False

    def received(self) -> int:
        """Messages received but not claimed yet: held by this consumer as the broker
        sees it (RabbitMQ's pushed deliveries); 0 for brokers that only hand out what
        is claimed."""
        return 0

    def pause_consuming(self) -> None:
        """Stop receiving messages until the next `claim`, and give back the ones received
        but not claimed (RabbitMQ's consumers push; a cordoned worker must not hold
        work it will not start). No-op for brokers that only hand out what is claimed."""
        return None

    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the last broker operation succeeded (used by /readyz)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; unacked claims return to the queue."""

    # -- inspection (read-only, safe for the controller and the CLI) --

    @abc.abstractmethod
    def stats(self, queue: str) -> QueueStats:
        """Depth, in-flight, delayed and dead-letter counts of one queue."""

    @abc.abstractmethod
    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The oldest `limit` dead-lettered messages of `queue`, without removing them."""

    @abc.abstractmethod
    def requeue_dead(self, queue: str, limit: int | None = None,
                     before: Callable[[bytes], None] | None = None) -> int:
        """Move dead-lettered messages back to `queue`, calling `before(body)` for each
        before it goes (the CLI reopens its result); returns how many moved."""

    @abc.abstractmethod
    def purge_dead(self, queue: str) -> int:
        """Delete the dead-letter queue's messages; returns how many were deleted."""

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
