"""What happens to a child's jobs when it ends, and which children must end.

Mixed into the Supervisor: a child that crashed or was hard-killed has its running
job settled without running it again (by another child: retried while retries
remain, else dead with FAILURE); its queued jobs go back in line. Children past
their hard time limit are killed with their task's process group; children past
their task or memory budget are replaced one at a time.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from worker.runtime.outcome import Outcome, Settle
from worker.runtime.pool import Child, Job, Pool, kill_group

if TYPE_CHECKING:  # provided by the Supervisor
    from worker.runtime.link import BrokerLink
    from worker.runtime.metrics import WorkerMetrics
    from worker.runtime.state import RuntimeState

log = logging.getLogger(__name__)

REAP_GRACE = 5.0           # seconds to wait for children to exit at shutdown
UNRUN_DEATHS = 2           # children lost settling one message unrun: it comes back later
COME_BACK_AFTER = 5.0      # seconds (as when the result store fails)


class ChildDeaths:
    """_reap / _lost / _enforce_hard_limits / _recycle of the Supervisor."""

    if TYPE_CHECKING:
        pool: Pool
        link: BrokerLink
        metrics: WorkerMetrics
        state: RuntimeState
        pending: deque[Job]
        _shutting_down: bool
        _default_limit: float | None
        _deadline: float | None

        def _drain_pipe(self, child: Child) -> bool: ...
        def _give_back(self, jobs: list[Job]) -> None: ...

    def _reap(self, child: Child) -> None:
        """A child exited or was killed: settle its running job, redistribute the rest."""
        self._drain_pipe(child)
        child.process.join(timeout=REAP_GRACE)
        if child.process.exitcode is None:
            self.pool.kill(child, child.kill_cause or "stuck")
            child.process.join()
        now = time.monotonic()
        cause = "shutdown" if self._shutting_down and child.kill_cause is None \
            else child.exit_cause()
        jobs = list(child.jobs)
        child.jobs.clear()
        had_job = bool(jobs) and jobs[0].started > 0.0
        if had_job and cause == "crash":
            kill_group(child.pid)  # what the crashed task started must not run on
        head = jobs[0] if jobs else None
        rest = [job for job in jobs[1:] if not job.given_back]  # given back: in the broker
        if head is not None and not head.given_back:
            if cause == "shutdown":
                self.link.requeue([head.delivery])
            elif cause == "hard_time_limit" and head.seq != child.overdue_seq:
                rest.insert(0, head)  # the overdue job had just finished; this one barely ran
            else:
                self._lost(head, child.lost_reason(head))
        self._give_back(rest)
        self.metrics.child_exited(child.pid)
        self.pool.forget(child, now, had_job)
        if cause in ("crash", "hard_time_limit"):
            log.warning("child replaced pid=%d slot=%d cause=%s (%s)", child.pid, child.slot,
                        cause, child.describe_exit())
        elif cause != "shutdown":
            log.info("child recycled pid=%d slot=%d cause=%s tasks=%d", child.pid,
                     child.slot, cause, child.done)
        if cause not in ("shutdown", "stopped"):
            self.metrics.child_replaced(cause)
            self.state.child_replaced(cause)

    def _lost(self, job: Job, reason: str) -> None:
        """A run died: a child settles the message without running it (retry or FAILURE).

        If children keep dying at that too (settling needs only decode and the result
        store: most likely the store hangs), the message goes back to the broker as it
        is, to come again in a while; never dead-lettered without its FAILURE."""
        if job.unrun is not None:
            job.unrun_deaths += 1
            if job.unrun_deaths >= UNRUN_DEATHS:
                log.error("settling a message unrun killed %d children (%s); it comes back "
                          "in %.0fs", job.unrun_deaths, reason, COME_BACK_AFTER)
                self.link.settle(job.delivery, Outcome(
                    settle=Settle.RETRY, status="store_error", retry_body=job.delivery.body,
                    retry_delay=COME_BACK_AFTER,
                    reason=f"settling it killed {job.unrun_deaths} children ({reason})"))
                return
        else:
            job.unrun = (reason, True)
        job.started, job.hard_limit = 0.0, self._default_limit
        self.pending.appendleft(job)

    def _enforce_hard_limits(self, now: float) -> None:
        for child, job in self.pool.overdue(now):
            child.overdue_seq = job.seq
            log.warning("hard time limit: killing pid=%d after %.1fs", child.pid,
                        now - job.started)
            self.pool.kill(child, "hard_time_limit")

    def _recycle(self) -> None:
        """Replace children past their task or memory limit, one child at a time.

        The chosen child gets no new work and is stopped once idle (a bloated child
        hands its queued jobs back by itself); the next waits until it is replaced.
        """
        for child in list(self.pool.children.values()):
            if child.retiring:
                self.pool.stop_when_idle(child)
        if self._deadline is not None:
            return
        chosen = self.pool.next_to_retire()
        if chosen is not None:
            chosen.retiring = True
            self.pool.stop_when_idle(chosen)
