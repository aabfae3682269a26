"""The automatic RabbitMQ prefetch window (basic.qos): grows at once, shrinks late.

A worker asks for what it can hold now (one message per free child, plus the
read-ahead short tasks need). Growing must be immediate or tiny tasks starve.
Shrinking matters once tasks turn out long: a window sized before the service time
was known (or for an earlier, faster mix) keeps unstarted messages on this pod while
new pods sit idle. It waits until the need has stayed lower for `shrink_after`
seconds, then drops to the most needed in that time, so a wobbling need does not
restart the consumers on every claim.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SHRINK_AFTER = 10.0  # seconds the need must stay below the window before it shrinks


class PrefetchWindow:
    """Decides the next basic.qos size from the current one and the caller's need."""

    def __init__(self, fixed: int = 0, shrink_after: float = SHRINK_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fixed = max(0, fixed)
        self.shrink_after = shrink_after
        self._clock = clock
        self._below_since: float | None = None
        self._peak = 0

    def next_size(self, current: int, need: int) -> int:
        if self.fixed:
            return self.fixed
        need = max(1, need)  # basic.qos 0 would mean no limit at all
        if need >= current:
            self._below_since = None
            return need
        now = self._clock()
        if self._below_since is None:
            self._below_since, self._peak = now, need
        self._peak = max(self._peak, need)
        if now - self._below_since < self.shrink_after:
            return current
        self._below_since = None
        return self._peak
