"""Reads each worker pod's published `/state`: who is busy, service times, counters.

Pods are listed by the Deployment's label selector and asked in parallel with a
short timeout. In-cluster the controller talks to pod IPs directly; on a host
outside the cluster network (tests, a laptop) it goes through the API server's
pod proxy (`pod_state_access=apiserver-proxy`, needs `get pods/proxy`;
controller.cordon's POSTs through it need `create pods/proxy`).

A running pod that does not answer is reported with `state=None`; the loop counts
it as busy, because never killing a busy worker matters more than a fast scale-in.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from kubernetes import client

log = logging.getLogger(__name__)

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
        return self.state is not None

    @property
    def busy_tasks(self) -> int:
        """Tasks running now (claimed but unfinished count as running)."""
        if self.state is None:
            return 0
        return max(_int(self.state.get("busy")), _int(self.state.get("in_flight")))

    @property
    def counts_as_busy(self) -> bool:
        """Whether removing this pod could kill work: busy, or running and silent."""
        if self.terminating or self.phase != "Running":
            return False
        return self.state is None or self.busy_tasks > 0

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


def _int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, list | tuple | dict):
        return len(value)
    return 0


def service_time_of(state: Mapping[str, Any]) -> float | None:
    """The overall service-time EWMA from a /state document, whatever its exact spelling."""
    for key in ("service_time_seconds", "service_time_ewma", "service_time",
                "service_time_ewma_seconds"):
        value = state.get(key)
        if isinstance(value, Mapping):
            value = value.get("overall", value.get("all"))
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _cost(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


def _ready_at(status: Any) -> float | None:
    """The time the pod's Ready condition turned True, or None while it is not Ready."""
    for condition in status.conditions or ():
        if condition.type == "Ready":
            since = condition.last_transition_time
            if condition.status != "True":
                return None
            return since.timestamp() if isinstance(since, datetime) else 0.0
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


def selector_string(match_labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))


class PodStateReader:
    """Lists a pool's pods and fetches their `/state` documents in parallel."""

    def __init__(self, core: client.CoreV1Api, *, access: Literal["direct", "apiserver-proxy"],
                 timeout: float = 0.5, max_parallel: int = 16) -> None:
        self.core = core
        self.access = access
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=max_parallel,
                                        thread_name_prefix="podstate")

    def read(self, namespace: str, match_labels: Mapping[str, str],
             port: int) -> list[PodState]:
        """Every pod matching the selector, with its state when `port` is set and it answers."""
        pods = self.core.list_namespaced_pod(
            namespace, label_selector=selector_string(match_labels),
            _request_timeout=5).items
        futures = [self._pool.submit(self._one, pod, port) for pod in pods]
        return [future.result() for future in futures]

    def _one(self, pod: Any, port: int) -> PodState:
        meta, status = pod.metadata, pod.status
        created = meta.creation_timestamp
        state: Mapping[str, Any] | None = None
        running = status.phase == "Running" and status.pod_ip and not meta.deletion_timestamp
        if running and port:
            state = self._fetch(meta.namespace, meta.name, status.pod_ip, port)
        return PodState(
            name=meta.name,
            ip=status.pod_ip,
            phase=status.phase or "Unknown",
            created=created.timestamp() if isinstance(created, datetime) else 0.0,
            terminating=meta.deletion_timestamp is not None,
            state=state,
            deletion_cost=_cost((meta.annotations or {}).get(DELETION_COST)),
            ready_at=_ready_at(status),
        )

    def _fetch(self, namespace: str, name: str, ip: str, port: int) -> Mapping[str, Any] | None:
        try:
            if self.access == "direct":
                with urllib.request.urlopen(
                        f"http://{ip}:{port}/state", timeout=self.timeout) as response:
                    raw = response.read()
            else:
                # _preload_content=False: the client would otherwise turn JSON into a repr.
                response = self.core.connect_get_namespaced_pod_proxy_with_path(
                    f"{name}:{port}", namespace, "state",
                    _preload_content=False, _request_timeout=self.timeout)
                raw = getattr(response, "data", response)
            doc = json.loads(raw)
        except Exception as exc:
            log.debug("pod %s/%s /state unreadable: %s", namespace, name, exc)
            return None
        return doc if isinstance(doc, dict) else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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
