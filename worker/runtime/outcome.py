"""What running one message produced, as the supervisor needs it to settle the message.

A child computes an Outcome; the supervisor (which owns the broker connection)
applies it: publish follow-ups first, then ack, retry or dead-letter. The
supervisor never parses a body: everything it needs travels here, including what
to record as FAILURE should the broker refuse a follow-up or a retry for good.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Settle(enum.Enum):
    ACK = "ack"              # done (success, or failure with no retries left and no DLQ need)
    RETRY = "retry"          # replace by `retry_body` after `retry_delay` seconds
    DEAD = "dead"            # move to the dead-letter queue with `reason`
    REQUEUE = "requeue"      # give back unchanged (shutdown before it ran)


@dataclass(frozen=True)
class FailurePlan:
    """Whose FAILURE to record if a message can no longer be sent: a task id and
    name, its chain's later steps ((result id, task) pairs) and its chord (a
    worker.envelope.ChordRef), as `ResultStore.record_failure` takes them."""

    task_id: str
    task: str
    attempt: int = 1
    chain: tuple[tuple[str, str], ...] = ()
    chord: Any = None


@dataclass(frozen=True)
class FollowUp:
    """A message to send before the original is settled (next chain step, chord callback)."""

    queue: str
    body: bytes
    delay: float = 0.0
    priority: int | None = None
    plan: FailurePlan | None = None   # the follow-up's own task, should it be refused


@dataclass(frozen=True)
class Outcome:
    """The result of executing (or refusing) one delivery.

    `status` is the metrics label: success, failure, retry, dead, bad_message, expired.
    `plan` is this task's FAILURE record should the broker refuse its retry.
    """

    settle: Settle
    status: str
    task: str = "unknown"
    task_id: str | None = None
    retry_body: bytes | None = None
    retry_delay: float = 0.0
    reason: str = ""
    detail: str = ""
    follow_ups: tuple[FollowUp, ...] = field(default_factory=tuple)
    runtime_s: float = 0.0
    queue_wait_s: float | None = None
    plan: FailurePlan | None = None
    dead_body: bytes | None = None  # keep this in the DLQ, not the body (an oversized one's head)
