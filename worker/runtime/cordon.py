"""Cordon: the controller's "take no new tasks" for a busy pod it wants to remove once idle.

`POST /cordon` (worker.runtime.http) sets a deadline in `RuntimeState` from the HTTP
thread; the supervisor loop calls `Cordon.follow` each turn, and while the
cordon holds it claims nothing and sends every unstarted message back to the
broker, so other pods run them. Running tasks finish; readiness is unaffected
(the pod still serves, it just empties). The deadline is a TTL the controller
refreshes, so a controller that dies cannot leave a pod cordoned for good.
"""

from __future__ import annotations

import logging

from worker.runtime.link import BrokerLink
from worker.runtime.state import RuntimeState

log = logging.getLogger(__name__)


class Cordon:
    """The supervisor's view of the cordon, changed only by `follow` (loop thread)."""

    def __init__(self, state: RuntimeState, link: BrokerLink) -> None:
        self.state = state
        self.link = link
        self.active = False

    def follow(self, now: float) -> bool:
        """Track the requested cordon; True when it just came into force (the caller
        then gives its unstarted messages back)."""
        wanted = self.state.cordon_left(now) is not None
        if wanted == self.active:
            return False
        self.active = self.state.cordoned = wanted
        if wanted:
            log.info("cordoned: claiming nothing new, unstarted tasks go back to the broker")
            # First, or RabbitMQ pushes the requeued messages straight back to us.
            self.link.pause_consuming()
        else:
            log.info("uncordoned: claiming again")
        return wanted
