"""Tells busy worker pods to take no new tasks, so a pool shrinks without killing work.

The policy's `Decision.drain_pods` counts busy pods it would remove if they were
idle (the busy-pod floor holds them). Whenever the loop has fresh pod states it
asks `plan_cordons` (pure) which pods to cordon: the least busy, already cordoned
ones first (a pod being emptied stays the one being emptied), in the order of
`podstate.rank_for_removal` -- the order of the deletion costs, so a cordoned pod
is the first the ReplicaSet removes once it is idle. A cordoned pod about to be
removed keeps its cordon; every other cordoned pod is released.

`PodCordoner` sends `POST /cordon {"ttl_seconds": ttl}` (resent on every pod read,
so a dead controller's cordons lapse by themselves) and `POST /uncordon` to the
worker's HTTP port with the QSCALE_CONTROL_TOKEN: straight to the pod IP
in-cluster, or through the API server's pod proxy (`pod_state_access=apiserver-proxy`,
needs `create pods/proxy`; the proxy consumes the Authorization header, so the
token travels as X-Qscale-Control-Token). Failures are logged and returned for
counting, never raised.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from controller.kubeapi import KubeApi
from controller.podstate import PodState, rank_for_removal
from controller.policy import Decision
from controller.pool import PoolSpec
from worker.runtime.http import TOKEN_HEADER  # the header the worker's endpoint reads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CordonPlan:
    """Pods to cordon (or keep cordoned: the request refreshes the TTL) and to release."""

    cordon: tuple[PodState, ...] = ()
    uncordon: tuple[PodState, ...] = ()


def plan_cordons(pods: Sequence[PodState], *, drain: int, remove: int,
                 cordoned: Collection[str], keep: Collection[str] = ()) -> CordonPlan:
    """Which pods should hold a cordon after this tick. Pure.

    `drain`: busy pods to empty (Decision.drain_pods); `remove`: pods the scale-down
    of this tick takes away (current - desired when shrinking); `cordoned`: pods this
    controller cordoned before (pods that report a cordon count too); `keep`: pods the
    scale-down gate confirmed idle and cordoned, which this tick removes.
    """
    ranked = rank_for_removal(pods, cordoned)
    held = {p.name for p in ranked if p.name in cordoned or p.cordoned}
    leaving = {p.name for p in ranked[:max(remove, 0)] if p.name in held} | (
        set(keep) & held)
    busy = [p for p in ranked if p.counts_as_busy and p.reachable]
    chosen = {p.name for p in busy[:max(drain, 0)]} | leaving
    return CordonPlan(
        cordon=tuple(p for p in ranked if p.name in chosen),
        uncordon=tuple(p for p in ranked if p.name in held - chosen and p.reachable))


@dataclass(frozen=True)
class CordonResult:
    """After `apply`: pods holding our cordon as far as we know, and failed requests."""

    cordoned: frozenset[str]
    failures: int


class PodCordoner:
    """Sends cordon requests to worker pods, in parallel, with a short timeout."""

    def __init__(self, kube: KubeApi, *, access: Literal["direct", "apiserver-proxy"],
                 token: str, ttl_seconds: float, timeout: float = 2.0,
                 max_parallel: int = 8) -> None:
        if not token:
            raise ValueError("a control token is required to cordon pods")
        self.kube = kube
        self.access = access
        self.ttl_seconds = ttl_seconds
        self.timeout = timeout
        self._token = token
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="cordon")

    def apply(self, namespace: str, port: int, plan: CordonPlan,
              before: Collection[str]) -> CordonResult:
        """Carry out `plan`; `before` is what was cordoned until now (for the result)."""
        jobs = [(pod, True) for pod in plan.cordon] + [(pod, False) for pod in plan.uncordon]
        futures = [self._pool.submit(self._send, namespace, pod, port, on)
                   for pod, on in jobs]
        cordoned, failures = set(before) & {p.name for p, _ in jobs}, 0
        for (pod, on), future in zip(jobs, futures, strict=True):
            error = future.result()
            if error is None:
                if on and pod.name not in before:
                    log.info("cordoned pod %s/%s (busy=%d)", namespace, pod.name,
                             pod.busy_tasks)
                elif not on:
                    log.info("uncordoned pod %s/%s", namespace, pod.name)
                (cordoned.add if on else cordoned.discard)(pod.name)
            else:
                failures += 1
                log.warning("%s pod %s/%s failed: %s", "cordon" if on else "uncordon",
                            namespace, pod.name, error)
                if not on:
                    cordoned.add(pod.name)  # still cordoned: try again next time
        return CordonResult(frozenset(cordoned), failures)

    def _send(self, namespace: str, pod: PodState, port: int, on: bool) -> str | None:
        """One request; None when the worker accepted it, else what went wrong."""
        path = "cordon" if on else "uncordon"
        body = {"ttl_seconds": self.ttl_seconds} if on else {}
        try:
            if self.access == "direct":
                if not pod.ip:
                    return "pod has no IP"
                status, data = self._direct(f"http://{pod.ip}:{port}/{path}", body)
            else:
                status, data = self._proxied(namespace, f"{pod.name}:{port}", path, body)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        if status == 200:
            return None
        return f"HTTP {status}: {data[:200].decode(errors='replace').strip()}"

    def _direct(self, url: str, body: dict[str, float]) -> tuple[int, bytes]:
        request = urllib.request.Request(
            url, method="POST", data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as err:
            return int(err.code), bytes(err.read())

    def _proxied(self, namespace: str, target: str, path: str,
                 body: dict[str, float]) -> tuple[int, bytes]:
        return self.kube.post_pod_proxy(namespace, target, path, body,
                                        {TOKEN_HEADER: self._token}, timeout=self.timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Metrics(Protocol):
    @property
    def cordoned_pods(self) -> Any: ...
    @property
    def cordon_errors(self) -> Any: ...


class PoolCordons:
    """One pool's cordons from tick to tick (the loop's part, kept out of loop.py)."""

    def __init__(self, cordoner: PodCordoner | None, metrics: _Metrics) -> None:
        self.cordoner = cordoner
        self.metrics = metrics
        self.names: frozenset[str] = frozenset()

    def hold(self, names: Collection[str]) -> None:
        """Pods the scale-down gate cordoned: ours now, released by a later plan."""
        self.names = self.names | frozenset(names)

    def release(self, spec: PoolSpec, *, acting: bool) -> None:
        """Forget our cordons (a refused pool acts on nothing; they lapse by their TTL)."""
        self.names = frozenset()
        if acting:
            self.metrics.cordoned_pods.labels(spec.namespace, spec.name).set(0)

    def update(self, spec: PoolSpec, pods: Sequence[PodState], decision: Decision,
               current: int, *, acting: bool, pods_read: bool,
               keep: Collection[str] = ()) -> None:
        """Cordon and release per `plan_cordons`; counts failures, exports the count.

        Only a leader that acts sends anything (a standby or --dry-run forgets, and its
        old cordons lapse or the leader reads them from /state); only right after a pod
        read, since the choice rests on pod states; a paused pool releases every pod."""
        if self.cordoner is None or not spec.pod_state_port:
            return
        labels = (spec.namespace, spec.name)
        if not acting:  # a standby exports no per-pool gauge either (controller.reporting)
            self.names = frozenset()
            return
        if pods_read:
            drain = 0 if spec.paused else decision.drain_pods
            remove = 0 if spec.paused else max(current - decision.desired, 0)
            plan = plan_cordons(pods, drain=drain, remove=remove, cordoned=self.names,
                                keep=keep)
            result = self.cordoner.apply(spec.namespace, spec.pod_state_port, plan, self.names)
            self.names = result.cordoned
            if result.failures:
                self.metrics.cordon_errors.labels(*labels).inc(result.failures)
        self.metrics.cordoned_pods.labels(*labels).set(len(self.names))
