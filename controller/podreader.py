"""Lists a pool's pods and reads each worker's `/state`, in parallel, with a short timeout.

Pods are listed by the Deployment's full label selector (matchLabels and
matchExpressions). In-cluster the controller talks to pod IPs directly; on a host
outside the cluster network (tests, a laptop) it goes through the API server's
pod proxy (`pod_state_access=apiserver-proxy`, needs `get pods/proxy`;
controller.cordon's POSTs through it need `create pods/proxy`).

A list that fails raises (the loop turns it into an unknown input); a /state that
does not answer or is not a /state document gives `state=None` with the reason.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Literal

from controller.kubeapi import KubeApi, timestamp
from controller.podstate import DELETION_COST, PodState, state_problem

log = logging.getLogger(__name__)

_OPERATORS = {"In": "in", "NotIn": "notin"}


def label_selector(selector: Any) -> str | None:
    """A LabelSelector (client model or dict) as a `label_selector` query; None when it
    selects nothing definite (absent or empty: listing would return every pod)."""
    if selector is None:
        return None
    if isinstance(selector, Mapping):
        labels = selector.get("matchLabels") or {}
        expressions = [(e.get("key"), e.get("operator"), e.get("values") or ())
                       for e in selector.get("matchExpressions") or ()]
    else:
        labels = selector.match_labels or {}
        expressions = [(e.key, e.operator, e.values or ())
                       for e in selector.match_expressions or ()]
    parts = [f"{key}={value}" for key, value in sorted(labels.items())]
    for key, operator, values in expressions:
        if operator in _OPERATORS:
            parts.append(f"{key} {_OPERATORS[operator]} ({','.join(sorted(values))})")
        elif operator == "Exists":
            parts.append(str(key))
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            return None  # an operator we cannot express: do not guess
    return ",".join(parts) or None


def _cost(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


def _ready_at(status: Mapping[str, Any]) -> float | None:
    """The time the pod's Ready condition turned True, or None while it is not Ready."""
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            if condition.get("status") != "True":
                return None
            return timestamp(condition.get("lastTransitionTime")) or 0.0
    return None


def _node_lost(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's node stopped reporting: Ready is False while ContainersReady is
    True and every container (sidecars too) is still last reported ready and running.

    The kubelet always writes a pod's Ready together with ContainersReady; only the
    node lifecycle controller flips Ready alone, when the node's heartbeats stop (it
    leaves the rest as last seen). A pod with readiness gates can be not Ready with
    ready containers for other reasons, so it never counts as lost.
    """
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if status.get("phase") != "Running" or spec.get("readinessGates"):
        return False
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    containers = status.get("containerStatuses") or ()
    sidecars = [c for c in status.get("initContainerStatuses") or ()
                if (c.get("state") or {}).get("terminated") is None]
    return (conditions.get("Ready") == "False" and conditions.get("ContainersReady") == "True"
            and bool(containers)
            and all(c.get("ready") is True and (c.get("state") or {}).get("running") is not None
                    for c in (*containers, *sidecars)))


def _containers_running(status: Mapping[str, Any]) -> bool:
    statuses = status.get("containerStatuses")
    if statuses is None:  # not reported yet: assume it may run
        return bool(status.get("phase") == "Running")
    return any((c.get("state") or {}).get("running") is not None for c in statuses)


class PodStateReader:
    """Lists a pool's pods and fetches their `/state` documents in parallel."""

    def __init__(self, kube: KubeApi, *, access: Literal["direct", "apiserver-proxy"],
                 timeout: float = 0.5, max_parallel: int = 16) -> None:
        self.kube = kube
        self.access = access
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=max_parallel,
                                        thread_name_prefix="podstate")

    def read(self, namespace: str, selector: str, port: int) -> list[PodState]:
        """Every pod matching `selector`, with its state when `port` is set and it answers."""
        if not selector:
            raise ValueError("an empty label selector would list every pod")
        pods = self.kube.list_pods(namespace, selector).get("items") or []
        futures = [self._pool.submit(self._one, pod, port) for pod in pods]
        return [future.result() for future in futures]

    def refresh(self, namespace: str, pods: Sequence[PodState], port: int) -> list[PodState]:
        """The same pods with their /state read again (e.g. to confirm a cordon held)."""
        futures = [self._pool.submit(self._fetch, namespace, pod.name, pod.ip or "", port)
                   for pod in pods]
        return [replace(pod, state=doc, state_error=error)
                for pod, (doc, error) in zip(pods, (f.result() for f in futures), strict=True)]

    def _one(self, pod: Mapping[str, Any], port: int) -> PodState:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        name, ip = str(meta.get("name")), status.get("podIP")
        state: Mapping[str, Any] | None = None
        error: str | None = None
        terminating = meta.get("deletionTimestamp") is not None
        if status.get("phase") == "Running" and ip and not terminating and port:
            state, error = self._fetch(str(meta.get("namespace")), name, ip, port)
        return PodState(
            name=name,
            ip=ip,
            phase=status.get("phase") or "Unknown",
            created=timestamp(meta.get("creationTimestamp")) or 0.0,
            terminating=terminating,
            state=state,
            deletion_cost=_cost((meta.get("annotations") or {}).get(DELETION_COST)),
            ready_at=_ready_at(status),
            node=str((pod.get("spec") or {}).get("nodeName") or ""),
            containers_running=_containers_running(status),
            state_error=error,
            # A worker that still answers is not lost, whatever its node's status says
            # (a kubelet down, a node cut from the API server but not from the broker).
            node_lost=not terminating and _node_lost(pod) and (not port or state is None),
        )

    def _fetch(self, namespace: str, name: str, ip: str,
               port: int) -> tuple[Mapping[str, Any] | None, str | None]:
        try:
            if self.access == "direct":
                with urllib.request.urlopen(
                        f"http://{ip}:{port}/state", timeout=self.timeout) as response:
                    raw = response.read()
            else:
                raw = self.kube.get_pod_proxy(namespace, f"{name}:{port}", "state",
                                              timeout=self.timeout)
            doc = json.loads(raw)
        except Exception as exc:
            log.debug("pod %s/%s /state unreadable: %s", namespace, name, exc)
            return None, f"{type(exc).__name__}: {exc}"[:200]
        problem = state_problem(doc)
        if problem is not None:
            log.debug("pod %s/%s /state unusable: %s", namespace, name, problem)
            return None, f"garbage /state: {problem}"[:200]
        return doc, None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
