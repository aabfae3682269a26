"""The scale-down gate: pods leave only once confirmed idle, in the tick that patches.

Lowering replicas by k lets the ReplicaSet pick k pods in its own order:
unscheduled first, then Pending, Unknown, Running; not Ready before Ready; then the
lowest `pod-deletion-cost` (the costs this tick is about to write). The gate asks
which pods that order takes and lowers replicas only as far as the leading ones are
confirmed idle: not running at all, or a fresh `/state` saying no task. With a
cordoner (the workers' control token) it first cordons them (they claim nothing
new) and reads their `/state` again, so no task can start on a pod between the
check and its removal: idle *and* cordoned, or it stays.

`removal_order` and `confirmed_prefix` are pure; `ScaleDownGate.check` does the I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controller.cordon import CordonPlan, PodCordoner
from controller.podstate import PodState

log = logging.getLogger(__name__)

_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}
CONFIRM_SECONDS = 3.0   # how long to wait for cordoned pods to report the cordon
CONFIRM_POLL_SECONDS = 0.2


def active(pods: Sequence[PodState]) -> list[PodState]:
    """The pods a ReplicaSet counts: not terminating, not finished."""
    return [p for p in pods if not p.terminating and p.phase not in ("Succeeded", "Failed")]


def removal_order(pods: Sequence[PodState], costs: Mapping[str, int]) -> list[PodState]:
    """The order in which the ReplicaSet controller deletes these pods on a scale-down
    (controller_utils ActivePodsWithRanks; ties: newest first)."""
    def key(pod: PodState) -> tuple[int, int, int, int, float]:
        cost = costs.get(pod.name, pod.deletion_cost if pod.deletion_cost is not None else 0)
        return (1 if pod.node else 0, _PHASE_ORDER.get(pod.phase, 2),
                0 if pod.ready_at is None else 1, cost, -pod.created)
    return sorted(active(pods), key=key)


def confirmed_prefix(order: Sequence[PodState], k: int,
                     cordon_held: Callable[[PodState], bool] | None = None) -> int:
    """How many of the first `k` pods in `order` are confirmed idle, counting from the
    first: the ReplicaSet removes them in this order, so a busy one stops the count.
    With `cordon_held`, a running pod must also hold its cordon."""
    confirmed = 0
    for pod in order[:k]:
        if not pod.idle:
            break
        if cordon_held is not None and pod.counts_as_running and not cordon_held(pod):
            break
        confirmed += 1
    return confirmed


@dataclass(frozen=True)
class GateResult:
    """How far the scale-down may go, and the pods it removes (confirmed idle)."""

    desired: int
    leaving: tuple[str, ...] = ()
    unconfirmed: int = 0          # replicas the policy wanted gone but the gate kept
    cordoned: frozenset[str] = frozenset()


class _Refresher(Protocol):
    def refresh(self, namespace: str, pods: list[PodState], port: int) -> list[PodState]: ...


class ScaleDownGate:
    """Confirms the pods a scale-down removes are idle (and cordoned, with a cordoner)."""

    def __init__(self, reader: _Refresher | None, cordoner: PodCordoner | None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reader, self.cordoner = reader, cordoner
        self._sleep, self._clock = sleep, clock

    def check(self, namespace: str, port: int, pods: Sequence[PodState], current: int,
              desired: int, costs: Mapping[str, int], *, cordoned: Collection[str],
              deadline_passed: bool) -> GateResult:
        """The lowest replica count, down to `desired`, whose removals are confirmed."""
        live = active(pods)
        not_created = max(current - len(live), 0)   # asked for, no pod yet: go first
        k = current - desired - not_created
        if k <= 0 or deadline_passed or not port:
            # Nothing to remove, busy pods may go (drain deadline), or pods publish no
            # state (podStatePort 0: the worker's own drain is all there is).
            return GateResult(desired)
        order = removal_order(live, costs)
        confirmed = confirmed_prefix(order, k)
        chosen = order[:confirmed]
        held: frozenset[str] = frozenset()
        if self.cordoner is not None and chosen:
            chosen, held = self._cordon_and_confirm(namespace, port, chosen, cordoned)
            confirmed = len(chosen)
        allowed = not_created + confirmed
        if confirmed < k:
            log.info("scale-down gate: %d of %d pods to remove confirmed idle (%s)",
                     confirmed, k, ",".join(p.name for p in order[confirmed:k]))
        return GateResult(current - allowed, tuple(p.name for p in chosen), k - confirmed,
                          held)

    def _cordon_and_confirm(self, namespace: str, port: int, chosen: list[PodState],
                            cordoned: Collection[str]) -> tuple[list[PodState],
                                                                frozenset[str]]:
        """Cordon the running pods among `chosen`, then read their /state until each
        reports the cordon in force and no task (or the time is up)."""
        assert self.cordoner is not None
        running = [p for p in chosen if p.counts_as_running]
        result = self.cordoner.apply(namespace, port, CordonPlan(cordon=tuple(running)),
                                     cordoned)
        held = frozenset(result.cordoned)
        if not running:
            return chosen, held
        states = {p.name: p for p in chosen}
        deadline = self._clock() + CONFIRM_SECONDS
        while True:
            pending = [p for p in running if not _cordon_in_force(states[p.name])]
            if not pending or self.reader is None or self._clock() >= deadline:
                break
            self._sleep(CONFIRM_POLL_SECONDS)
            for pod in self.reader.refresh(namespace, pending, port):
                states[pod.name] = pod
        fresh = [states[p.name] for p in chosen]
        count = confirmed_prefix(fresh, len(fresh), _cordon_in_force)
        return fresh[:count], held


def _cordon_in_force(pod: PodState) -> bool:
    state: Any = pod.state
    return bool(pod.reachable and state.get("cordoned") and pod.busy_tasks == 0)
