"""Reconciling a worker's view with its broker's: no delivery held by nobody, none run
by two workers when one of them could know better.

Mixed into the Supervisor. After every reconnect and every three leases it asks the
broker which deliveries it holds for this worker (Broker.held): those it holds and
the worker forgot (an ack lost with a crashed Redis, a settlement given up on) are
handed back; those the worker still means to start but the broker no longer gives
it (its lease lapsed in a partition and another worker reclaimed them, or RabbitMQ
took a lost channel's deliveries back) are not started here.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # provided by the Supervisor
    from worker.runtime.link import BrokerLink
    from worker.runtime.pool import Job, Pool
    from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class Reconciler:
    """_reconcile of the Supervisor."""

    if TYPE_CHECKING:
        settings: WorkerSettings
        pool: Pool
        link: BrokerLink
        pending: deque[Job]

    def _reconcile(self) -> None:
        """Compare what the broker holds for this worker with what it knows, both ways
        (nothing happens while the broker cannot tell)."""
        held = self.link.held(self.settings.queues)
        if held is None:
            return
        held_tags = {d.tag for d in held}
        stale = [job for job in self.pending if job.delivery.tag not in held_tags]
        self.pending = deque(job for job in self.pending if job.delivery.tag in held_tags)
        for child in list(self.pool.children.values()):
            queued = [job for job in list(child.jobs)[1:]
                      if not job.given_back and job.delivery.tag not in held_tags]
            if queued:
                self.pool.drop_queued(child, queued)
                stale += queued
        if stale:
            log.warning("reconcile: %d unstarted deliveries are no longer this worker's "
                        "(its claims lapsed or its channel was lost); not running them",
                        len(stale))
        known = {job.delivery.tag for job in self.pending}
        known.update(job.delivery.tag for c in self.pool.children.values() for job in c.jobs)
        known.update(self.link.unsettled_tags())
        forgotten = [d for d in held if d.tag not in known]
        if forgotten:
            log.warning("reconcile: the broker holds %d deliveries for this worker that it "
                        "no longer tracks (a lost ack or settle); giving them back",
                        len(forgotten))
            self.link.requeue(forgotten)
