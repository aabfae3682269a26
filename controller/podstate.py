"""What a worker pod told the controller about itself (`/state`), and the removal order.

`PodState` is one pod as listed plus its `/state` document (read by
controller.podreader); the ranking functions decide which pods go first. Pure.

A running pod that does not answer, or answers with something that is not a
/state document (`busy` and `in_flight` must be counts), is reported with
`state=None` and `state_error` saying why: unknown is not zero, so the loop counts
it as busy and holds scale-downs while a Ready pod's state is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


@dataclass(frozen=True)
class PodState:
    """One pod of the pool and what its worker said about itself (None: no answer)."""

    name: str
    ip: str | None
    phase: str
    created: float
    terminating: bool
    state: Mapping[str, Any] | None
    deletion_cost: int | None = None
    ready_at: float | None = None     # when the Ready condition last turned True (None: not Ready)
    node: str = "node"                # spec.nodeName ("" while unscheduled)
    containers_running: bool = True   # some container is running (else it holds no task)
    state_error: str | None = None    # why `state` is None (no answer, garbage)
    node_lost: bool = False           # its node stopped reporting (see podreader._node_lost)

    @property
    def starting(self) -> bool:
        """Created but not Ready yet: it will consume soon, but does not now."""
        return not self.terminating and self.ready_at is None

    @property
    def startup_seconds(self) -> float | None:
        """Creation -> Ready, the start-up time a new pod of this pool pays."""
        if self.ready_at is None or not self.created or self.ready_at < self.created:
            return None
        return self.ready_at - self.created

    @property
    def reachable(self) -> bool:
        """It answered with a usable /state document."""
        return self.state is not None and state_problem(self.state) is None

    @property
    def busy_tasks(self) -> int:
        """Tasks running now (claimed but unfinished count as running)."""
        if self.state is None or not self.reachable:
            return 0
        return max(int(self.state["busy"]), int(self.state["in_flight"]))

    @property
    def counts_as_busy(self) -> bool:
        """Whether removing this pod could kill work: busy, or running and silent.

        Not a pod lost with its node: its tasks are already going back to the broker
        (lease or connection gone), and a kubelet that comes back still stops it
        gracefully."""
        if (self.terminating or self.phase != "Running" or not self.containers_running
                or self.node_lost):
            return False
        return not self.reachable or self.busy_tasks > 0

    @property
    def counts_as_running(self) -> bool:
        """A worker process is up in it: it could hold tasks and can take a cordon."""
        return (not self.terminating and self.phase == "Running" and self.containers_running
                and not self.node_lost)

    @property
    def state_unknown(self) -> bool:
        """A Ready, running pod whose /state could not be read: an unknown input."""
        return (not self.terminating and self.phase == "Running" and self.ready_at is not None
                and self.containers_running and not self.reachable)

    @property
    def idle(self) -> bool:
        """Confirmed idle: it cannot hold a task (not running, or lost with its node),
        or said it holds none."""
        if (self.terminating or self.phase != "Running" or not self.containers_running
                or self.node_lost):
            return True
        return self.reachable and self.busy_tasks == 0

    @property
    def cordoned(self) -> bool:
        """The worker says it is cordoned (or a cordon it was sent still holds)."""
        if self.state is None:
            return False
        return bool(self.state.get("cordoned")) or self.state.get("cordon_expires_in") is not None

    @property
    def service_time(self) -> float | None:
        return service_time_of(self.state) if self.state is not None else None

    @property
    def completed(self) -> int | None:
        if self.state is None:
            return None
        for key in ("completed", "tasks_completed", "processed", "completed_total"):
            if key in self.state:
                return _int(self.state[key])
        return None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def state_problem(doc: object) -> str | None:
    """Why `doc` is not a usable /state document (None: it is). A count that is not a
    non-negative integer is garbage, never read as 0."""
    if not isinstance(doc, Mapping):
        return f"not a JSON object: {type(doc).__name__}"
    for key in ("busy", "in_flight"):
        if not _count(doc.get(key)):
            return f"{key}={doc.get(key)!r} is not a count"
    return None


def _int(value: object) -> int:
    return value if _count(value) else 0  # type: ignore[return-value]


def service_time_of(state: Mapping[str, Any]) -> float | None:
    """The overall service-time EWMA from a /state document, whatever its exact spelling."""
    for key in ("service_time_seconds", "service_time_ewma", "service_time",
                "service_time_ewma_seconds"):
        value = state.get(key)
        if isinstance(value, Mapping):
            value = value.get("overall", value.get("all"))
        if (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value) and value > 0):
            return float(value)
    return None


def startup_estimate(pods: Sequence[PodState], last: int = 10) -> float | None:
    """Median creation -> Ready time of the `last` most recently created Ready pods.

    The median shrugs off a pod that went unready and back (its Ready time moved
    later); None until some pod has become Ready, so the policy uses its configured d.
    """
    times = [(p.created, t) for p in pods if (t := p.startup_seconds) is not None]
    recent = sorted(t for _, t in sorted(times)[-last:])
    if not recent:
        return None
    middle = len(recent) // 2
    return recent[middle] if len(recent) % 2 else (recent[middle - 1] + recent[middle]) / 2


def rank_for_removal(pods: Sequence[PodState],
                     cordoned: Collection[str] = ()) -> list[PodState]:
    """Pods in the order they should go: idle first, then least busy, youngest first;
    within each, cordoned pods (named in `cordoned` or saying so) first, since they
    are emptying on purpose (controller.cordon picks them from this order)."""
    def key(pod: PodState) -> tuple[int, int, int, float]:
        busy = pod.counts_as_busy
        load = pod.busy_tasks if pod.reachable else 1 << 20
        held = pod.name in cordoned or pod.cordoned
        return (1 if busy else 0, 0 if held else 1, load if busy else 0, -pod.created)
    return sorted((p for p in pods if not p.terminating), key=key)


def deletion_costs(pods: Sequence[PodState], cordoned: Collection[str] = ()) -> dict[str, int]:
    """The pod-deletion-cost each pod should carry so the ReplicaSet removes idle ones first.

    Idle pods get small costs (0, 1, 2, ...), busy pods large ones (1_000_000 + rank),
    so any idle pod is deleted before any busy one, and a cordoned pod before others
    like it.
    """
    costs: dict[str, int] = {}
    for rank, pod in enumerate(rank_for_removal(pods, cordoned)):
        costs[pod.name] = (1_000_000 + rank) if pod.counts_as_busy else rank
    return costs
