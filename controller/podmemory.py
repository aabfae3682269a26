"""What a pool's pods told the controller that must outlive them.

A pool at zero replicas has no pod left to report how long a pod takes to start
or how long a task takes, yet latency mode (and batching) needs both to decide
when to start the next one. `PodMemory` keeps them across ticks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from controller.podstate import PodState, startup_estimate

# Start-up time is the median over this many most recently created pods seen Ready.
STARTUP_SAMPLE_PODS = 10
# Pod creation times are whole seconds (and the API server's clock): a pod created in
# the same second as the first pod list must still count as created while watching.
CREATED_SLACK_SECONDS = 2.0


class PodMemory:
    """Recent pods' start-up times and the last reported service time."""

    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self._wall_clock = wall_clock
        self._started: dict[str, PodState] = {}  # recent pods seen Ready
        self._watching_since: float | None = None  # wall time of the first pod list
        self.service_time: float | None = None

    def remember_startups(self, pods: Sequence[PodState]) -> None:
        """Keep the newest pods' start-up times, so a pool at zero still knows its d.

        Only pods created while this loop watched, each at its first Ready: a Ready
        condition moves on every flip, so an older pod that once went unready (node
        restart, failed probe) would report an hour-long "start-up"."""
        if self._watching_since is None:
            self._watching_since = self._wall_clock()
        since = self._watching_since - CREATED_SLACK_SECONDS
        self._started.update((p.name, p) for p in pods if p.name not in self._started
                             and p.created >= since and p.startup_seconds is not None)
        if len(self._started) > STARTUP_SAMPLE_PODS:
            newest = sorted(self._started.values(), key=lambda p: p.created)
            self._started = {p.name: p for p in newest[-STARTUP_SAMPLE_PODS:]}

    def startup_seconds(self) -> float | None:
        return startup_estimate(list(self._started.values()))

    def remember_service_time(self, live: Sequence[PodState]) -> float | None:
        """The live pods' mean service time, or the last one known when none reports."""
        times = [t for t in (p.service_time for p in live) if t is not None]
        if times:
            self.service_time = sum(times) / len(times)
        return self.service_time
